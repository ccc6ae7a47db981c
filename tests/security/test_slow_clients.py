"""Slow clients: stalled or dribbled bodies and paused readers hold bounded resources.

The `slow` service has one upstream connection and a 1 s write timeout, so a client that holds
that connection shows up as every other request to the service waiting for it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import pytest

from tests.security.wire import Wire, exchange, request
from tests.support.proxy_process import ProxyProcess
from tests.support.upstream import Upstream

MIB = 1024 * 1024


def served(gateway: ProxyProcess, path: str) -> int:
    """Status of one plain GET (the connection closes after it)."""
    result = exchange(gateway.port, request("GET", path, "Connection: close"), quiet=2.0)
    return result.statuses[0] if result.statuses else 0


def slow_service_serves_within(gateway: ProxyProcess, limit: float) -> bool:
    """Whether a request to the one-connection service gets its 200 within `limit` seconds
    (each try waits at most the 1 s pool timeout, then gets 504)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if served(gateway, "/slow/echo/probe") == 200:
            return True
    return False


@contextlib.contextmanager
def stalled_upload(gateway: ProxyProcess, path: str) -> Iterator[Wire]:
    """A client that declared 1000 body bytes, sent 10 and then stopped sending."""
    with Wire(gateway.port) as w:
        w.send(request("POST", path, "Content-Length: 1000", body=b"s" * 10))
        yield w


def test_a_stalled_upload_releases_the_upstream_connection_after_the_write_timeout(
    gateway: ProxyProcess, upstream: Upstream
) -> None:
    assert slow_service_serves_within(gateway, 5)
    with stalled_upload(gateway, "/slow/echo/stalled") as w:
        # Other services keep being served while the upload hangs.
        assert served(gateway, "/api/echo/free/meanwhile") == 200
        # The stalled upload holds the service's only connection for a bounded time only.
        assert slow_service_serves_within(gateway, 10)
        # The stalled client was answered (408) or dropped, not left hanging.
        result = w.responses(quiet=0.5)
        assert result.closed or result.statuses == [408], result.raw[:500]


@pytest.mark.parametrize("path", ["/slow/echo/stalled", "/api/echo/paid"], ids=["free", "paid"])
@pytest.mark.parametrize("sent", [b"", b"s" * 10], ids=["head only", "part of the body"])
def test_a_client_that_stops_sending_its_body_gets_408_and_the_connection_ends(
    path: str, sent: bytes, gateway: ProxyProcess, upstream: Upstream
) -> None:
    with Wire(gateway.port) as w:
        w.send(request("POST", path, "Content-Length: 1000", body=sent))
        # The services' write timeouts are 1 s (slow) and 2 s (api); the bound is generous.
        assert w.wait_closed(limit=15), "a stalled upload must not hold its connection forever"
        result = w.responses(quiet=0.1)
    assert result.statuses == [408], result.raw[:500]
    assert result.responses[0].header(b"content-type") == b"application/problem+json"
    if sent:
        assert slow_service_serves_within(gateway, 5)


def test_a_client_that_leaves_mid_upload_frees_the_upstream_connection(
    gateway: ProxyProcess, upstream: Upstream
) -> None:
    assert slow_service_serves_within(gateway, 5)
    for _ in range(3):
        with stalled_upload(gateway, "/slow/echo/gone"):
            time.sleep(0.1)
        assert slow_service_serves_within(gateway, 10)


def test_a_dribbled_upload_to_a_paid_route_never_opens_an_upstream_connection(
    gateway: ProxyProcess, upstream: Upstream
) -> None:
    opened, requests = upstream.connections_total, upstream.requests
    body = b"d" * 12
    with Wire(gateway.port) as w:
        w.send(request("POST", "/api/echo/paid", f"Content-Length: {len(body)}"))
        for i, byte in enumerate(body):
            w.send(bytes([byte]))
            if i % 4 == 0:
                # Served meanwhile (through the other upstream, so the counts above stay clean).
                assert served(gateway, "/evil/plain") == 200
            time.sleep(0.05)
        result = w.responses(quiet=0.5)
    assert result.statuses == [402], result.raw[:500]
    # The paid body is buffered and checked for payment first: the upstream saw nothing.
    assert (upstream.connections_total, upstream.requests) == (opened, requests)


def test_many_half_sent_heads_do_not_stop_other_clients(gateway: ProxyProcess) -> None:
    wires = [Wire(gateway.port) for _ in range(50)]
    try:
        for w in wires:
            w.send(b"GET /api/echo/free/slowloris HTTP/1.1\r\nHost: gateway.test\r\nX-A: ")
        for _ in range(3):
            for w in wires:
                w.send(b"a")
            assert served(gateway, "/api/echo/free/meanwhile") == 200
    finally:
        for w in wires:
            w.close()


def rss_growth_while_paused(gateway: ProxyProcess, wire: Wire, samples: int = 15) -> int:
    """RSS growth of the server while a client reads nothing, once the growth has settled."""
    before = gateway.rss_bytes()
    peak = before
    for _ in range(samples):
        time.sleep(0.1)
        peak = max(peak, gateway.rss_bytes())
    return peak - before


@pytest.mark.parametrize("size", [64 * MIB])
def test_a_paused_reader_keeps_server_memory_bounded_and_others_served(
    size: int, gateway: ProxyProcess, upstream: Upstream
) -> None:
    # Warm the allocator with one transfer read at full speed.
    with Wire(gateway.port) as warm:
        warm.send(request("GET", f"/api/bytes?n={8 * MIB}", "Connection: close"))
        assert warm.wait_closed()
    baseline = gateway.rss_bytes()
    with Wire(gateway.port, rcvbuf=4096) as w:
        w.send(request("GET", f"/api/bytes?n={size}", "Connection: close"))
        w.sock.settimeout(5)
        got = len(w.sock.recv(64 * 1024))
        growth = rss_growth_while_paused(gateway, w)
        # Served concurrently while one response is stuck behind a closed window.
        assert served(gateway, "/api/echo/free/meanwhile") == 200
        while True:
            data = w.sock.recv(1 << 20)
            if not data:
                break
            got += len(data)
    # Bounded buffers: the stuck response cost a few MiB at most, nowhere near its size.
    assert growth < size // 4, (growth, baseline)
    assert got > size


def test_a_reader_that_stops_and_leaves_frees_the_upstream_connection(
    gateway: ProxyProcess,
) -> None:
    assert slow_service_serves_within(gateway, 5)
    with Wire(gateway.port, rcvbuf=4096) as w:
        w.send(request("GET", f"/slow/bytes?n={32 * MIB}"))
        w.sock.settimeout(5)
        assert w.sock.recv(1024).startswith(b"HTTP/1.1 200")
        # The download holds the service's only connection while the client is there...
        assert served(gateway, "/slow/echo/busy") == 504
    # ...and gives it back once the client has gone, though the body was never read.
    assert slow_service_serves_within(gateway, 10)
