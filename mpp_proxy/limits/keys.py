"""What a limit counts by: a request's key value for `ip`, `payer`, `route` or `header:NAME`.

`payer` is the payer the credential claims (its `source` DID), read before the credential is
verified: limits decide before payment. A request without one (and any request to a free
route) is counted by `ip`, as is a header-keyed request without that header.
"""

from __future__ import annotations

import hashlib
import ipaddress

from mpp_proxy.config.model import HEADER_KEY

# A header value longer than this is counted by its digest (bounded keys in any store).
_LONG = 128


def ip_value(client: str) -> str:
    """An IPv4 address as it is; an IPv6 one by its /64 (one subscriber's usual allocation,
    so rotating addresses inside it does not escape the limit)."""
    if ":" not in client:
        return "ip:" + client
    try:
        net = ipaddress.IPv6Network((client, 64), strict=False)
    except ValueError:
        return "ip:" + client
    return f"ip:{net.network_address}/64"


def header_value(name: bytes, headers: list[tuple[bytes, bytes]]) -> str | None:
    for header, value in headers:
        if header == name or header.lower() == name:
            if not value:
                return None
            if len(value) > _LONG:
                return "h:#" + hashlib.sha256(value).hexdigest()
            return "h:" + value.decode("latin-1")
    return None


class KeyReader:
    """Reads one key kind from a request; built once per limit."""

    __slots__ = ("header", "kind")

    def __init__(self, key: str) -> None:
        self.kind = "header" if key.startswith(HEADER_KEY) else key
        self.header = key[len(HEADER_KEY) :].encode("latin-1") if self.kind == "header" else b""

    def value(
        self, client: str, payer: str | None, route: str, headers: list[tuple[bytes, bytes]]
    ) -> str:
        kind = self.kind
        if kind == "ip":
            return ip_value(client)
        if kind == "route":
            return route
        if kind == "payer":
            return "payer:" + payer if payer else ip_value(client)
        return header_value(self.header, headers) or ip_value(client)
