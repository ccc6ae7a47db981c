"""Failures of the data path: one type per kind, each mapped to exactly one problem, here.

`reason` names the failure in the ledger (a paid request that fails keeps its payment as a
credit with this reason) and `kind` in metrics; the status a client sees is the problem's, and
it is decided nowhere else.
"""

from __future__ import annotations

from typing import ClassVar

from mpp_proxy.payments import NotDelivered
from mpp_proxy.problems import Problem, problem


class ProxyFailure(Exception):
    """Base: a request could not be served as asked."""

    status: ClassVar[int] = 500
    reason: ClassVar[str] = "proxy-error"
    kind: str = "proxy"

    def problem(self, service_id: str) -> Problem:
        return problem(self.status, "internal-error", "Internal error", "the gateway failed")

    def not_delivered(self, upstream_status: int | None = None) -> NotDelivered:
        """How a paid request that failed this way is recorded (its payment becomes a credit)."""
        return NotDelivered(self.reason, self.status, upstream_status)


# ------------------------------------------------------------------------ the client's side


class ClientGone(ProxyFailure):
    """The client disconnected before the request was served: there is nobody to answer."""

    status = 499  # never sent: nobody is there to read it
    reason = "client-disconnected"
    kind = "client"


class BodyTooLarge(ProxyFailure):
    """The request body (declared or received) is over the route's limit."""

    status = 413
    reason = "body-too-large"
    kind = "client"

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit

    def problem(self, service_id: str) -> Problem:
        return body_too_large(self.limit)


class ClientStalled(ProxyFailure):
    """The request body stopped arriving for longer than the service's write timeout."""

    status = 408
    reason = "client-stalled"
    kind = "client"

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds

    def problem(self, service_id: str) -> Problem:
        return problem(
            self.status,
            "request-timeout",
            "Request timeout",
            f"the request body stalled: no bytes for {self.seconds:g} s",
            headers=((b"connection", b"close"),),
        )


class Unforwardable(ProxyFailure):
    """The request cannot be written to the upstream safely (a header or target our codec
    refuses); paid routes check this before payment."""

    status = 400
    reason = "bad-request"
    kind = "client"

    def problem(self, service_id: str) -> Problem:
        return problem(self.status, "bad-request", "Bad request", "the request cannot be forwarded")


# ------------------------------------------------------------------------ the upstream's side


class UpstreamError(ProxyFailure):
    """Base: the upstream exchange failed before or during the response."""

    status = 502
    reason = "upstream-protocol-error"
    kind = "protocol"

    def problem(self, service_id: str) -> Problem:
        return problem(
            self.status,
            "bad-gateway",
            "Bad gateway",
            f"the upstream of service '{service_id}' failed",
        )


class UpstreamUnreachable(UpstreamError):
    """Connection refused, DNS failure, TLS verification failure: nothing was sent."""

    reason = "upstream-unreachable"
    kind = "refused"

    def __init__(self, detail: str, kind: str = "refused") -> None:
        super().__init__(detail)
        self.kind = kind  # refused | tls

    def problem(self, service_id: str) -> Problem:
        return problem(
            self.status,
            "upstream-unreachable",
            "Upstream unreachable",
            f"could not connect to the upstream of service '{service_id}': {self}",
        )


class UpstreamTimeout(UpstreamError):
    """Connect, read, write or pool-wait timeout; `phase` names which one."""

    status = 504
    reason = "upstream-timeout"
    kind = "timeout"

    def __init__(self, phase: str) -> None:
        super().__init__(phase)
        self.phase = phase

    def problem(self, service_id: str) -> Problem:
        return problem(
            self.status,
            "upstream-timeout",
            "Upstream timeout",
            f"the upstream of service '{service_id}' did not answer in time ({self.phase})",
        )


class UpstreamProtocolError(UpstreamError):
    """The upstream closed the connection early or sent something that is not HTTP/1.1."""

    def problem(self, service_id: str) -> Problem:
        return problem(
            self.status,
            "bad-upstream-response",
            "Bad upstream response",
            f"the upstream of service '{service_id}' sent an invalid or incomplete response",
        )


def upstream_answered(status: int, body: bytes) -> NotDelivered:
    """A paid request whose upstream answered at or over the route's `deliver_below`: a failure
    status is passed on to the client as it is, anything else (a redirect, say) is a 502."""
    return NotDelivered("upstream-status", status if 400 <= status <= 599 else 502, status, body)


class UpstreamAborted(Exception):
    """Raised to the ASGI server after the head was sent: the server must reset the response."""


def body_too_large(limit: int) -> Problem:
    return problem(
        413,
        "body-too-large",
        "Request body too large",
        f"the request body exceeds this route's limit of {limit} bytes",
        max_body_bytes=limit,
    )
