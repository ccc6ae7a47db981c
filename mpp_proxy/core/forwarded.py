"""The client's address: the peer, or, when the peer is a trusted proxy, the rightmost hop of
its forwarding header (X-Forwarded-For or RFC 7239 Forwarded) that is not a trusted proxy.

Everything left of that hop was written by whoever the untrusted client is, so it is never
believed; a hop that does not read as an address stops the walk at the last trusted one.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from mpp_proxy.core.types import Scope

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Peers whose trust was decided, kept to this many (a proxy's peers are few: its balancers).
_CACHE = 1024


def read_address(text: str) -> Address | None:
    """One hop as written: `1.2.3.4`, `1.2.3.4:5678`, `[2001:db8::1]:443`, `"[::1]"`, a bare
    IPv6 address; IPv4-mapped IPv6 reads as IPv4. None for `unknown`, `_hidden`, garbage."""
    text = text.strip().strip('"')
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def forwarded_for(values: Iterable[str]) -> list[str]:
    """The `for=` node of each element of RFC 7239 Forwarded values, in order ("" if none)."""
    hops: list[str] = []
    for value in values:
        for element in value.split(","):
            node = ""
            for pair in element.split(";"):
                name, _, text = pair.partition("=")
                if name.strip().lower() == "for":
                    node = text
            hops.append(node)
    return hops


def x_forwarded_for(values: Iterable[str]) -> list[str]:
    return [hop for value in values for hop in value.split(",")]


class ClientAddress:
    """Computes a request's client address; one per proxy, built from its settings."""

    __slots__ = ("_header", "_networks", "_parse", "_trusted")

    def __init__(self, networks: Iterable[str], header: str = "x-forwarded-for") -> None:
        self._networks: tuple[Network, ...] = tuple(ipaddress.ip_network(n) for n in networks)
        self._header = header.encode("latin-1")
        self._parse = forwarded_for if header == "forwarded" else x_forwarded_for
        self._trusted: dict[str, bool] = {}

    @property
    def trusts_any(self) -> bool:
        return bool(self._networks)

    def of(self, scope: Scope) -> str:
        """The client address of a request ("" when the server gives no peer)."""
        client = scope.get("client")
        peer = str(client[0]) if client else ""
        if not self._networks or not self._is_trusted(peer):
            return peer
        values = [v.decode("latin-1") for n, v in scope["headers"] if n.lower() == self._header]
        return self.walk(peer, self._parse(values))

    def walk(self, peer: str, hops: list[str]) -> str:
        """The rightmost untrusted hop, right to left from a trusted peer."""
        found = peer
        for hop in reversed(hops):
            address = read_address(hop)
            if address is None:
                break
            found = str(address)
            if not self._is_trusted(found):
                break
        return found

    def _is_trusted(self, text: str) -> bool:
        known = self._trusted.get(text)
        if known is not None:
            return known
        address = read_address(text)
        trusted = address is not None and any(address in net for net in self._networks)
        if len(self._trusted) >= _CACHE:
            self._trusted.clear()
        self._trusted[text] = trusted
        return trusted
