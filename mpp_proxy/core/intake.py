"""The intake stage: the client address (behind trusted proxies), the upstream request head
(header rules, target, forwarding headers), the request body's framing, and the size limit,
decided before anything is paid or sent."""

from __future__ import annotations

from mpp_proxy.core.body import RequestBody
from mpp_proxy.core.errors import Unforwardable, body_too_large
from mpp_proxy.core.exchange import Exchange
from mpp_proxy.core.headers import REQUEST_ID
from mpp_proxy.core.http11 import RequestError, check_head
from mpp_proxy.core.request_id import request_id, request_id_of
from mpp_proxy.core.types import HeaderList
from mpp_proxy.problems import Problem, problem

BAD_CONTENT_LENGTH = problem(400, "bad-request", "Bad request", "invalid content-length")
_HTTP1 = frozenset({"1.1", "1.0"})


def intake(ex: Exchange) -> Problem | None:
    """Build the upstream head; None to go on, else the answer (400, 413).

    A bodyless HTTP/1 request (no content-length, no chunked: RFC 9112 6.3) is complete here;
    otherwise `ex.reader` is set and `receive_first` must run next.
    """
    plan = ex.plan
    sp = plan.service
    scope = ex.scope
    client = ex.client = sp.clients.of(scope)
    peer = scope.get("client")
    if peer and client != peer[0]:
        # Behind trusted proxies: the access log and everything after see the client's
        # address, as a proxy-headers middleware would set it (the port is not known).
        scope["client"] = (client, 0)
    payment: list[tuple[bytes, bytes]] | None = [] if plan.offers is not None else None
    try:
        headers, content_length, chunked, rid = sp.request_rules.apply(scope["headers"], payment)
    except ValueError:
        ex.request_id = request_id_of(scope["headers"])
        return BAD_CONTENT_LENGTH
    rid = ex.request_id = request_id(rid)
    headers.append((REQUEST_ID, rid))
    limit = plan.max_body
    if content_length is not None and content_length > limit:
        return body_too_large(limit)
    if sp.forward_ip:
        add_forwarded(headers, ex.client, scope.get("scheme", "http"))
    query: bytes = scope.get("query_string", b"")
    target = sp.base_path + ex.upstream_path.encode("latin-1")
    ex.target = target + b"?" + query if query else target
    ex.method_b = ex.method.encode("ascii")
    ex.headers = headers
    ex.payment = payment
    ex.chunked = chunked
    if payment is not None:
        ex.idempotency = idempotency_key(scope["headers"])
        # Whatever our codec would refuse at forward time is refused now, before payment.
        try:
            check_head(ex.method_b, ex.target, headers)
        except RequestError:
            return Unforwardable().problem(sp.id)
    if content_length or chunked or scope.get("http_version") not in _HTTP1:
        ex.reader = RequestBody(ex.receive, limit, sp.timeouts.write)
        ex.content_length = content_length
        return None
    # The body is empty: we do not ask the server for it (a round trip into granian per
    # request). A client that already left is noticed by the disconnect watch instead.
    if content_length is not None:
        headers.append((b"content-length", b"%d" % content_length))
    return None


async def receive_first(ex: Exchange) -> None:
    """Take the body's first message and frame the upstream request by what it says.

    A paid request's body streams like any other when its length is declared (the server
    holds the client to it); without a declared length it is read whole first, up to the
    limit, so that a body over the limit is refused before anything is paid. A route whose
    price is read from the body always reads it whole (the challenge binds its digest), and
    so does a paid request with an Idempotency-Key (a retry must repeat the body).
    Raises ClientGone, ClientStalled, BodyTooLarge.
    """
    reader = ex.reader
    assert reader is not None
    body, more = await reader.next()
    content_length = ex.content_length
    offers = ex.plan.offers
    if (
        more
        and offers is not None
        and (content_length is None or offers.reads_body or ex.idempotency is not None)
    ):
        body, more = await reader.rest(body), False
    ex.body = body
    ex.more = more
    if ex.chunked or (content_length is None and more):
        ex.chunked = True
        ex.headers.append((b"transfer-encoding", b"chunked"))
    elif content_length is not None:
        ex.headers.append((b"content-length", b"%d" % content_length))
    elif body:
        ex.headers.append((b"content-length", b"%d" % len(body)))


def idempotency_key(headers: HeaderList) -> str | None:
    for name, value in headers:
        if name == b"idempotency-key":
            return value.decode("latin-1")
    return None


def add_forwarded(headers: HeaderList, ip: str, scheme: str) -> None:
    """The client's address for the upstream (the one intake computed, never a client's claim)."""
    if not ip:
        return
    node = f'"[{ip}]"' if ":" in ip else ip
    headers.append((b"x-forwarded-for", ip.encode("latin-1")))
    headers.append((b"x-forwarded-proto", scheme.encode("latin-1")))
    headers.append((b"forwarded", f"for={node};proto={scheme}".encode("latin-1")))
