"""Oversized requests: bodies over the limit, huge header blocks and URLs are refused cleanly.

The upstream sees nothing (or at most the limit of a chunked body), the client gets one answer,
and the proxy keeps serving afterwards.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import pytest

from tests.security.gateway import BODY_LIMIT
from tests.security.wire import Wire, exchange, request
from tests.support.proxy_process import ProxyProcess
from tests.support.upstream import Upstream


def assert_still_serving(gateway: ProxyProcess) -> None:
    assert gateway.alive()
    result = exchange(gateway.port, request("GET", "/api/echo/free/after", "Connection: close"))
    assert result.statuses == [200], result.raw[:500]


@pytest.mark.parametrize("path", ["/api/echo/free/big", "/api/echo/paid"])
def test_declared_length_over_the_limit_is_413_before_any_byte_is_read(
    path: str, gateway: ProxyProcess, upstream: Upstream
) -> None:
    before = (upstream.connections_total, upstream.requests, upstream.body_bytes)
    with Wire(gateway.port) as w:
        # Only the head: the answer must not wait for a body it is going to refuse.
        w.send(request("POST", path, f"Content-Length: {64 * 1024 * 1024}"))
        result = w.responses(quiet=0.3)
    assert result.statuses == [413], result.raw[:500]
    doc = result.responses[0].json()
    assert doc["max_body_bytes"] == BODY_LIMIT
    assert result.responses[0].header(b"content-type") == b"application/problem+json"
    assert (upstream.connections_total, upstream.requests, upstream.body_bytes) == before
    assert_still_serving(gateway)


def settled(read: Callable[[], int], quiet: float = 0.3, limit: float = 5.0) -> int:
    """A counter's value once it stopped moving for `quiet` seconds (bounded by `limit`)."""
    deadline = time.monotonic() + limit
    value = read()
    still_since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = read()
        if now != value:
            value, still_since = now, time.monotonic()
        elif time.monotonic() - still_since >= quiet:
            break
    return value


def chunked_body(total: int, piece: int = 1024) -> bytes:
    out = b""
    for _ in range(total // piece):
        out += b"%x\r\n%s\r\n" % (piece, b"z" * piece)
    return out + b"0\r\n\r\n"


def test_chunked_body_over_the_limit_is_413_and_the_upstream_sees_at_most_the_limit(
    gateway: ProxyProcess, upstream: Upstream
) -> None:
    before_requests, before_bytes = upstream.requests, upstream.body_bytes
    data = request("POST", "/api/echo/free/chunked", "Transfer-Encoding: chunked")
    result = exchange(gateway.port, data + chunked_body(4 * BODY_LIMIT))
    assert result.statuses == [413], result.raw[:500]
    # The upstream got the head and the first chunks, never a complete request.
    received = settled(lambda: upstream.body_bytes) - before_bytes
    assert upstream.requests == before_requests
    assert received <= BODY_LIMIT
    assert_still_serving(gateway)


def test_chunked_body_over_the_limit_on_a_paid_route_never_reaches_the_upstream(
    gateway: ProxyProcess, upstream: Upstream
) -> None:
    before = (upstream.connections_total, upstream.requests, upstream.body_bytes)
    data = request("POST", "/api/echo/paid", "Transfer-Encoding: chunked")
    result = exchange(gateway.port, data + chunked_body(4 * BODY_LIMIT))
    assert result.statuses == [413], result.raw[:500]
    assert (upstream.connections_total, upstream.requests, upstream.body_bytes) == before
    assert_still_serving(gateway)


def test_body_exactly_at_the_limit_is_forwarded_whole(gateway: ProxyProcess) -> None:
    body = b"q" * BODY_LIMIT
    result = exchange(
        gateway.port,
        request("POST", "/api/echo/free/exact", f"Content-Length: {len(body)}", body=body),
    )
    assert result.statuses == [200]
    assert result.responses[0].json()["body_len"] == BODY_LIMIT


@pytest.mark.parametrize(
    "data",
    [
        request("GET", "/api/echo/free/a", "X-Big: " + "h" * (1024 * 1024)),
        request("GET", "/api/echo/free/a", *(f"X-H{i}: {'v' * 64}" for i in range(20_000))),
        request("GET", "/api/echo/free/" + "u" * (1024 * 1024)),
        request("GET", "/api/echo/free/a?" + "q=1&" * 300_000),
        request("GET", "/api/echo/paid/a", "Authorization: Payment " + "A" * 200_000),
    ],
    ids=["1 MiB header", "20k headers", "1 MiB path", "1 MiB query", "200 kB credential"],
)
def test_huge_heads_are_refused_without_reaching_the_upstream(
    data: bytes, gateway: ProxyProcess, upstream: Upstream
) -> None:
    before = upstream.requests
    with Wire(gateway.port) as w:
        # The server may refuse and close before it read everything.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            w.send(data)
        result = w.responses(quiet=0.3)
    assert len(result.responses) <= 1, result.raw[:500]
    assert all(400 <= s < 500 for s in result.statuses), result.raw[:500]
    assert upstream.requests == before
    assert_still_serving(gateway)
