"""Header rules for forwarding: what is stripped, what is injected, computed once per service."""

from __future__ import annotations

from collections.abc import Iterable

from mpp_proxy.core.types import HeaderList
from mpp_proxy.payments import PAYMENT_REQUEST_HEADERS

# Hop-by-hop headers (RFC 9110 7.6.1) plus the legacy ones proxies still meet in the wild.
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"proxy-connection",
    }
)

REQUEST_ID = b"x-request-id"

# Request headers never forwarded upstream, on top of the hop-by-hop set. `content-length` is
# re-emitted by the core from what the client declared; `expect` is answered by our own server.
REQUEST_STRIP = (
    HOP_BY_HOP
    | frozenset(
        {
            b"host",
            b"content-length",
            b"expect",
            # client credentials
            b"authorization",
            b"cookie",
            # payment protocol headers belong to the gateway, never to the upstream
            b"payment-receipt",
            b"www-authenticate",
            # client-supplied forwarding claims (spoofable)
            b"forwarded",
            b"x-real-ip",
            # decided by intake (kept when well-formed, else replaced) and re-added
            REQUEST_ID,
        }
    )
    | PAYMENT_REQUEST_HEADERS
)
# ":" catches HTTP/2 pseudo-headers should a server pass them through.
REQUEST_STRIP_PREFIXES = (b"proxy-", b"payment-", b"x-forwarded-", b":")

# The upstream's own request id would contradict ours: it is passed on under this name.
RESPONSE_STRIP = HOP_BY_HOP | {REQUEST_ID}
UPSTREAM_REQUEST_ID = b"x-upstream-request-id"


# Connection values that name nothing beyond the hop-by-hop set (nearly every response says
# keep-alive): no per-request token parsing for them.
_PLAIN_CONNECTION = frozenset({b"keep-alive", b"Keep-Alive", b"close", b"Close"})
_NO_TOKENS: frozenset[bytes] = frozenset()


def _connection_tokens(value: bytes) -> frozenset[bytes]:
    if value in _PLAIN_CONNECTION:
        return _NO_TOKENS
    return frozenset(t.strip().lower() for t in value.split(b",") if t.strip())


class RequestHeaderRules:
    """Turns the client's header list into the upstream's: strip, then inject auth and Host."""

    __slots__ = ("inject", "strip")

    def __init__(
        self,
        *,
        host: bytes,
        auth: Iterable[tuple[bytes, bytes]] = (),
        strip: Iterable[str] = (),
    ) -> None:
        injected = tuple(auth)
        # A client-sent header with the injected name (say X-Api-Key) would be a second credential.
        self.strip = (
            REQUEST_STRIP
            | frozenset(s.lower().encode("latin-1") for s in strip)
            | frozenset(name.lower() for name, _ in injected)
        )
        self.inject: tuple[tuple[bytes, bytes], ...] = ((b"host", host), *injected)

    def apply(
        self,
        headers: Iterable[tuple[bytes, bytes]],
        payment: list[tuple[bytes, bytes]] | None = None,
    ) -> tuple[HeaderList, int | None, bool, bytes | None]:
        """Return (upstream headers, declared content-length or None, client body was chunked,
        the client's X-Request-Id or None).

        With `payment`, the payment headers met on the way (stripped like every credential) are
        appended to it: the request's headers are scanned once. Raises ValueError on an
        unparsable content-length.
        """
        strip = self.strip
        out: HeaderList = list(self.inject)
        content_length: int | None = None
        chunked = False
        request_id: bytes | None = None
        named: frozenset[bytes] | None = None
        for raw_name, value in headers:
            name = raw_name.lower()
            if name in strip:
                if name == b"content-length":
                    content_length = int(value)
                    if content_length < 0:
                        raise ValueError("negative content-length")
                elif name == b"transfer-encoding":
                    chunked = chunked or b"chunked" in value.lower()
                elif name == b"connection":
                    tokens = _connection_tokens(value)
                    named = tokens if named is None else named | tokens
                elif payment is not None and name in PAYMENT_REQUEST_HEADERS:
                    payment.append((name, value))
                elif name == REQUEST_ID:
                    request_id = value
                continue
            if name.startswith(REQUEST_STRIP_PREFIXES):
                continue
            out.append((name, value))
        if named:
            keep = len(self.inject)
            out[keep:] = [h for h in out[keep:] if h[0] not in named]
        return out, content_length, chunked, request_id


class ResponseHeaderRules:
    """Filters the upstream's response headers before they reach the client."""

    __slots__ = ("strip",)

    def __init__(self, strip: Iterable[str] = ()) -> None:
        self.strip = RESPONSE_STRIP | frozenset(s.lower().encode("latin-1") for s in strip)

    def apply(self, headers: Iterable[tuple[bytes, bytes]]) -> HeaderList:
        """Headers must already have lower-case names (the upstream codec gives them so)."""
        strip = self.strip
        out: HeaderList = []
        named: frozenset[bytes] | None = None
        for name, value in headers:
            if name in strip:
                if name == b"connection":
                    tokens = _connection_tokens(value)
                    named = tokens if named is None else named | tokens
                elif name == REQUEST_ID:
                    out.append((UPSTREAM_REQUEST_ID, value))
                elif name == b"transfer-encoding":
                    # The codec framed the body by chunked: a content-length next to it is stale,
                    # and our server would frame the client's response by it (response
                    # splitting). RFC 9112 6.3: a proxy removes it before forwarding.
                    named = _STALE_LENGTH if named is None else named | _STALE_LENGTH
                continue
            out.append((name, value))
        if named:
            out = [h for h in out if h[0] not in named]
        return out


_STALE_LENGTH = frozenset({b"content-length"})
