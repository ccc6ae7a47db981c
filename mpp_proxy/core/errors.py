"""Failures of the data path, one type per kind, each mapped to exactly one problem response."""

from __future__ import annotations

from mpp_proxy.problems import Problem, problem


class UpstreamError(Exception):
    """Base: the upstream exchange failed before or during the response."""

    def to_problem(self, service_id: str) -> Problem:
        return problem(
            502, "bad-gateway", "Bad gateway", f"the upstream of service '{service_id}' failed"
        )


class UpstreamUnreachable(UpstreamError):
    """Connection refused, DNS failure, TLS verification failure: nothing was sent."""

    def to_problem(self, service_id: str) -> Problem:
        return problem(
            502,
            "upstream-unreachable",
            "Upstream unreachable",
            f"could not connect to the upstream of service '{service_id}': {self}",
        )


class UpstreamTimeout(UpstreamError):
    """Connect, read, write or pool-wait timeout; `phase` names which one."""

    def __init__(self, phase: str) -> None:
        super().__init__(phase)
        self.phase = phase

    def to_problem(self, service_id: str) -> Problem:
        return problem(
            504,
            "upstream-timeout",
            "Upstream timeout",
            f"the upstream of service '{service_id}' did not answer in time ({self.phase})",
        )


class UpstreamProtocolError(UpstreamError):
    """The upstream closed the connection early or sent something that is not HTTP/1.1."""

    def to_problem(self, service_id: str) -> Problem:
        return problem(
            502,
            "bad-upstream-response",
            "Bad upstream response",
            f"the upstream of service '{service_id}' sent an invalid or incomplete response",
        )


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


def client_stalled(seconds: float) -> Problem:
    return problem(
        408,
        "request-timeout",
        "Request timeout",
        f"the request body stalled: no bytes for {seconds:g} s",
        headers=((b"connection", b"close"),),
    )
