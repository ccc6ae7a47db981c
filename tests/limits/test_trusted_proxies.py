"""The client address behind trusted proxies: whatever a client writes into X-Forwarded-For or
Forwarded, only the hops trusted proxies added are believed; from an untrusted peer, nothing.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from limits_support import proxy_toml, serving

from mpp_proxy.core.forwarded import ClientAddress, read_address
from tests.support.upstream import Upstream

TRUSTED = ("10.0.0.0/8", "192.168.1.0/24", "2001:db8:ffff::/48")
PROXIES = ClientAddress(TRUSTED)
FORWARDED = ClientAddress(TRUSTED, "forwarded")

trusted_v4 = st.builds(lambda n: f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}", st.integers(0))
trusted_v6 = st.builds(
    lambda n: str(ipaddress.IPv6Address(f"2001:db8:ffff::{n:x}")), st.integers(0, 0xFFFF)
)
trusted_ip = st.one_of(trusted_v4, trusted_v6, st.just("192.168.1.7"))
untrusted_ip = st.one_of(
    st.ip_addresses(v=4).filter(lambda a: a not in ipaddress.ip_network("10.0.0.0/8")),
    st.ip_addresses(v=6).filter(lambda a: a not in ipaddress.ip_network("2001:db8:ffff::/48")),
).map(lambda a: str(a.ipv4_mapped or a) if isinstance(a, ipaddress.IPv6Address) else str(a))
# What a client may write: spoofed addresses (trusted ones too), junk, empty hops.
spoofed = st.lists(
    st.one_of(trusted_ip, untrusted_ip, st.text(max_size=12), st.just("unknown")), max_size=6
)


def scope(peer: str, name: bytes, values: list[str]) -> dict[str, Any]:
    headers = [(name, v.encode("latin-1", "replace")) for v in values]
    return {"client": (peer, 5000), "headers": [(b"host", b"x"), *headers]}


def split(hops: list[str], cut: int) -> list[str]:
    """The chain as one or two header lines (a proxy may append its own line)."""
    cut = min(cut, len(hops))
    lines = [", ".join(hops[:cut]), ", ".join(hops[cut:])]
    return [line for line in lines if line]


def node(ip: str) -> str:
    return f'"[{ip}]:4711"' if ":" in ip else f"{ip}:4711"


@given(spoofed, untrusted_ip, st.lists(trusted_ip, max_size=4), trusted_ip, st.integers(0, 10))
def test_behind_trusted_proxies_the_client_is_the_rightmost_untrusted_hop(
    client_written: list[str], client: str, proxies: list[str], peer: str, cut: int
) -> None:
    hops = [*client_written, client, *proxies]
    assert PROXIES.of(scope(peer, b"x-forwarded-for", split(hops, cut))) == client
    elements = [f"for={h}" for h in client_written] + [
        f"for={node(h)};proto=https" for h in (client, *proxies)
    ]
    assert FORWARDED.of(scope(peer, b"forwarded", split(elements, cut))) == client


@given(spoofed, untrusted_ip, st.integers(0, 10))
def test_from_an_untrusted_peer_forwarding_headers_are_never_read(
    written: list[str], peer: str, cut: int
) -> None:
    for name in (b"x-forwarded-for", b"forwarded", b"X-Forwarded-For"):
        assert PROXIES.of(scope(peer, name, split(written, cut))) == peer
        assert FORWARDED.of(scope(peer, name, split(written, cut))) == peer


@given(st.lists(trusted_ip, min_size=1, max_size=5), trusted_ip)
def test_a_chain_of_trusted_hops_only_ends_at_its_leftmost(hops: list[str], peer: str) -> None:
    assert PROXIES.of(scope(peer, b"x-forwarded-for", [", ".join(hops)])) == hops[0]


def test_an_unreadable_hop_stops_the_walk_at_the_last_trusted_one() -> None:
    headers = ["6.6.6.6, not-an-ip, 10.0.0.2"]
    assert PROXIES.of(scope("10.0.0.1", b"x-forwarded-for", headers)) == "10.0.0.2"
    assert FORWARDED.of(scope("10.0.0.1", b"forwarded", ["for=unknown"])) == "10.0.0.1"


def test_hops_read_with_ports_brackets_quotes_and_mapped_ipv4() -> None:
    assert str(read_address("203.0.113.9:443")) == "203.0.113.9"
    assert str(read_address('"[2001:db8::1]:4711"')) == "2001:db8::1"
    assert str(read_address("2001:db8::1")) == "2001:db8::1"
    assert str(read_address("::ffff:203.0.113.9")) == "203.0.113.9"
    assert read_address("_hidden") is None
    assert read_address("[2001:db8::1") is None


def test_forward_client_ip_sends_the_address_found_behind_a_trusted_peer(
    tmp_path: Path, upstream: Upstream
) -> None:
    service = "forward_client_ip = true"
    proxy = 'trusted_proxies = ["127.0.0.1/32"]'
    text = proxy_toml('"* /echo/*" = "free"', url=upstream.url, service=service, proxy=proxy)
    with serving(tmp_path, text) as (_, client):
        spoof = {"X-Forwarded-For": "6.6.6.6, 203.0.113.7", "X-Real-IP": "6.6.6.6"}
        seen = dict(client.get("/api/echo/x", headers=spoof).json()["headers"])
        assert seen["x-forwarded-for"] == "203.0.113.7"
        assert seen["forwarded"] == "for=203.0.113.7;proto=http"
        assert "x-real-ip" not in seen


def test_from_an_untrusted_peer_spoofed_headers_are_dropped_and_cannot_dodge_a_limit(
    tmp_path: Path, upstream: Upstream
) -> None:
    service = "forward_client_ip = true"
    proxy = 'trusted_proxies = ["10.0.0.0/8"]'  # the loopback client is not a proxy
    routes = '"* /echo/*" = { limits = [{ rate = "1/minute", key = "ip" }] }'
    text = proxy_toml(routes, url=upstream.url, service=service, proxy=proxy)
    with serving(tmp_path, text) as (_, client):
        first = client.get("/api/echo/x", headers={"X-Forwarded-For": "203.0.113.1"})
        seen = dict(first.json()["headers"])
        assert seen["x-forwarded-for"] == "127.0.0.1"
        # Another claimed address is still the same client.
        again = client.get("/api/echo/x", headers={"X-Forwarded-For": "203.0.113.2"})
        assert again.status_code == 429


def test_behind_a_trusted_peer_each_forwarded_client_has_its_own_limit(
    tmp_path: Path, upstream: Upstream
) -> None:
    proxy = 'trusted_proxies = ["127.0.0.1/32"]\nforwarded_header = "forwarded"'
    routes = '"* /echo/*" = { limits = [{ rate = "1/minute", key = "ip" }] }'
    with serving(tmp_path, proxy_toml(routes, url=upstream.url, proxy=proxy)) as (_, client):

        def get(value: str) -> int:
            return client.get("/api/echo/x", headers={"Forwarded": value}).status_code

        assert get('for="[2001:db8:1:2::5]"') == 200
        assert get("for=198.51.100.1") == 200
        assert get("for=198.51.100.1") == 429
        # The same IPv6 /64 is one client: rotating addresses inside it does not help.
        assert get('for="[2001:db8:1:2::99]"') == 429
        # X-Forwarded-For is not the header this operator's balancer writes: not read.
        r = client.get("/api/echo/x", headers={"X-Forwarded-For": "198.51.100.9"})
        assert r.status_code == 200  # counted as the peer itself, 127.0.0.1, a fresh key
