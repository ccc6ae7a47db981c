"""RFC 9457 problem+json responses: the one place an error becomes status, headers and body."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

# Our own problem types (gateway errors that are not about payment).
GATEWAY_TYPE = "https://mpp-proxy.dev/problems/"
# Payment problems use the MPP registry.
PAYMENT_TYPE = "https://paymentauth.org/problems/"

Headers = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class Problem:
    """A complete refusal or failure response: status, headers (content-type included), body.

    `slug` is the problem type's short name (the last segment of its type URI), for logs and
    metrics; every answer the gateway makes itself, payment refusals included, is a Problem.
    """

    status: int
    headers: Headers
    body: bytes
    slug: str = ""

    def with_headers(self, *extra: tuple[bytes, bytes]) -> Problem:
        """The same problem with more response headers."""
        return Problem(self.status, (*self.headers, *extra), self.body, self.slug)


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str = "",
    *,
    base: str = GATEWAY_TYPE,
    headers: Headers = (),
    **extra: Any,
) -> Problem:
    """Build a problem response. `extra` members are added to the body as they are."""
    doc: dict[str, Any] = {"type": base + slug, "title": title, "status": status}
    if detail:
        doc["detail"] = detail
    doc.update(extra)
    body = orjson.dumps(doc)
    head = (
        (b"content-type", b"application/problem+json"),
        (b"content-length", str(len(body)).encode()),
        *headers,
    )
    return Problem(status, head, body, slug)


INSTANCE_PREFIX = b"urn:mpp-proxy:request:"
_REQUEST_ID = b"x-request-id"
# What `problem` puts first: an answer that does not start so (a stored response replayed for an
# idempotent retry) keeps its body as it is.
_PROBLEM_HEAD = ((b"content-type", b"application/problem+json"),)


def with_instance(p: Problem, request_id: bytes) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """(headers, body) of `p` for one request: `instance` names the request id, and the id
    comes back as X-Request-Id (in place of any the answer carried). Spliced into the prebuilt
    body at send time, so a problem is built once (most are static) and never re-encoded; the
    id is [A-Za-z0-9._:-] only, so it needs no JSON escaping."""
    body = p.body
    if p.headers[:1] == _PROBLEM_HEAD and body.endswith(b"}"):
        body = body[:-1] + b',"instance":"' + INSTANCE_PREFIX + request_id + b'"}'
    length = b"%d" % len(body)
    headers = [
        (n, length) if n == b"content-length" else (n, v) for n, v in p.headers if n != _REQUEST_ID
    ]
    headers.append((_REQUEST_ID, request_id))
    return headers, body
