"""Request smuggling through granian and the proxy: one client request is one upstream request.

Whatever granian accepts, the upstream (which counts requests and echoes what it got) must see
exactly one well-framed request per client request, never a second one hidden in a body, and
the paid route is never reached without a payment.
"""

from __future__ import annotations

import pytest

from tests.security.gateway import UPSTREAM_KEY
from tests.security.wire import Exchange, exchange, request
from tests.support.proxy_process import ProxyProcess
from tests.support.upstream import Upstream

FREE = "/api/echo/free/a"
# A complete request to the paid route, to hide in bodies.
CHUNKED_ABC = b"3\r\nabc\r\n0\r\n\r\n"
SMUGGLED = b"GET /api/echo/paid/smuggled HTTP/1.1\r\nHost: gateway.test\r\n\r\n"


def assert_one_upstream_request_per_answer(result: Exchange, delta: int) -> None:
    """Every request the upstream saw produced exactly one echo answer to the client, on the
    free route, and nothing else came back: no smuggled request, no extra response."""
    echoed = [r for r in result.responses if r.status == 200]
    assert delta == len(echoed), (delta, result.statuses, result.raw[:2000])
    for r in echoed:
        doc = r.json()
        assert "/paid" not in doc["path"], doc
        keys = [v for k, v in doc["raw_headers"] if k.lower() == "x-api-key"]
        assert keys == [UPSTREAM_KEY], doc["raw_headers"]
        for name, value in doc["raw_headers"]:
            assert not set(name + value) & {"\r", "\n", "\x00"}, (name, value)
    # 403: granian refusing a websocket upgrade the app closed.
    assert set(result.statuses) <= {200, 400, 402, 403, 501}, result.statuses
    assert result.leftover == b"", result.leftover[:500]


SMUGGLING_SHAPES = {
    "content-length and transfer-encoding": (
        "POST",
        ["Content-Length: 5", "Transfer-Encoding: chunked"],
        b"0\r\n\r\n" + SMUGGLED,
    ),
    "transfer-encoding before content-length": (
        "POST",
        ["Transfer-Encoding: chunked", "Content-Length: 60"],
        b"0\r\n\r\n" + SMUGGLED,
    ),
    "duplicate content-length, different values": (
        "POST",
        ["Content-Length: 5", "Content-Length: 66"],
        b"hello" + SMUGGLED,
    ),
    "content-length list with different values": (
        "POST",
        ["Content-Length: 5, 66"],
        b"hello" + SMUGGLED,
    ),
    "transfer-encoding chunked, identity": (
        "POST",
        ["Transfer-Encoding: chunked, identity", "Content-Length: 5"],
        b"0\r\n\r\n" + SMUGGLED,
    ),
    "transfer-encoding identity, chunked": (
        "POST",
        ["Transfer-Encoding: identity, chunked"],
        b"0\r\n\r\n" + SMUGGLED,
    ),
    "space before the colon of transfer-encoding": (
        "POST",
        ["Transfer-Encoding : chunked", "Content-Length: 5"],
        b"0\r\n\r\n" + SMUGGLED,
    ),
    "obs-folded transfer-encoding": (
        "POST",
        ["Transfer-Encoding:", " chunked", "Content-Length: 5"],
        b"0\r\n\r\n" + SMUGGLED,
    ),
    "unknown coding xchunked": (
        "POST",
        ["Transfer-Encoding: xchunked", "Content-Length: 5"],
        b"0\r\n\r\n" + SMUGGLED,
    ),
    "transfer-encoding twice": (
        "POST",
        ["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
        b"0\r\n\r\n" + SMUGGLED,
    ),
    "upper-case CHUNKED with a tab": (
        "POST",
        ["Transfer-Encoding:\tCHUNKED"],
        b"0\r\n\r\n" + SMUGGLED,
    ),
    "negative content-length": ("POST", ["Content-Length: -5"], b"hello" + SMUGGLED),
    "signed content-length": ("POST", ["Content-Length: +5"], b"hello" + SMUGGLED),
    "hex content-length": ("POST", ["Content-Length: 0x5"], b"hello" + SMUGGLED),
    "content-length on a GET hiding a request": (
        "GET",
        [f"Content-Length: {len(SMUGGLED)}"],
        SMUGGLED,
    ),
}


@pytest.mark.parametrize("shape", list(SMUGGLING_SHAPES))
def test_ambiguous_framing_never_smuggles_a_second_request(
    shape: str, gateway: ProxyProcess, upstream: Upstream
) -> None:
    method, headers, body = SMUGGLING_SHAPES[shape]
    before = upstream.requests

    result = exchange(gateway.port, request(method, FREE, *headers, body=body))

    assert result.responses, result.raw[:500]
    assert_one_upstream_request_per_answer(result, upstream.requests - before)


def test_content_length_on_get_is_forwarded_as_that_gets_body(
    gateway: ProxyProcess, upstream: Upstream
) -> None:
    before = upstream.requests
    result = exchange(
        gateway.port, request("GET", FREE, f"Content-Length: {len(SMUGGLED)}", body=SMUGGLED)
    )
    assert result.statuses == [200]
    doc = result.responses[0].json()
    # The hidden request stayed a body: framed by its length, never parsed as a request.
    assert (doc["method"], doc["body"]) == ("GET", SMUGGLED.decode())
    assert doc["body_len"] == len(SMUGGLED)
    assert ["content-length", str(len(SMUGGLED))] in doc["raw_headers"]
    assert upstream.requests - before == 1


HEADER_INJECTIONS = {
    "obs-fold carrying a second credential": ["X-A: 1", " X-Api-Key: client-key"],
    "bare CR in a value": ["X-A: a\rX-Api-Key: client-key"],
    "bare LF in a value": ["X-A: a\nX-Api-Key: client-key"],
    "NUL in a value": ["X-A: a\x00b"],
    "NUL in a name": ["X-A\x00B: 1"],
    "CR in a name": ["X-A\rB: 1"],
    "space in a name": ["X-Api-Key : client-key"],
    "name without colon": ["X-Api-Key client-key"],
}


@pytest.mark.parametrize("shape", list(HEADER_INJECTIONS))
def test_header_names_and_values_with_cr_lf_nul_never_reach_the_upstream(
    shape: str, gateway: ProxyProcess, upstream: Upstream
) -> None:
    before = upstream.requests
    result = exchange(gateway.port, request("GET", FREE, *HEADER_INJECTIONS[shape]))
    assert len(result.responses) == 1, result.raw[:500]
    assert_one_upstream_request_per_answer(result, upstream.requests - before)


def test_connection_header_cannot_remove_injected_auth_host_or_framing(
    gateway: ProxyProcess, upstream: Upstream
) -> None:
    before = upstream.requests
    result = exchange(
        gateway.port,
        request(
            "POST",
            FREE,
            "Connection: x-api-key, host, content-length",
            "Connection: transfer-encoding, authorization",
            "X-Api-Key: client-key",
            "Content-Length: 5",
            body=b"hello",
        ),
    )
    assert result.statuses == [200], result.raw[:500]
    doc = result.responses[0].json()
    headers = {k: v for k, v in doc["raw_headers"]}
    assert headers["x-api-key"] == UPSTREAM_KEY
    assert headers["host"].startswith("127.0.0.1:")
    assert headers["content-length"] == "5"
    assert (doc["body"], doc["body_len"]) == ("hello", 5)
    assert_one_upstream_request_per_answer(result, upstream.requests - before)


def test_pipelined_requests_after_bodies_are_answered_in_order_and_paid_stays_paid(
    gateway: ProxyProcess, upstream: Upstream
) -> None:
    before = upstream.requests
    data = (
        request("POST", FREE, "Content-Length: 5", body=b"hello")
        + request("GET", "/api/echo/paid/x")
        + request("POST", "/api/echo/free/b", "Transfer-Encoding: chunked", body=CHUNKED_ABC)
        + request("GET", "/api/echo/free/c")
    )
    result = exchange(gateway.port, data, quiet=0.6)
    assert result.statuses == [200, 402, 200, 200], result.raw[:3000]
    docs = [r.json() for r in result.responses if r.status == 200]
    assert [(d["path"], d["body"]) for d in docs] == [
        ("/echo/free/a", "hello"),
        ("/echo/free/b", "abc"),
        ("/echo/free/c", ""),
    ]
    assert_one_upstream_request_per_answer(result, upstream.requests - before)


@pytest.mark.parametrize(
    "chunks",
    [
        b"zz\r\nabcd\r\n0\r\n\r\n",
        b"10000000000000004\r\nabcd\r\n0\r\n\r\n",
        b"4\r\nabcdXX0\r\n\r\n",
    ],
    ids=["non-hex size", "size overflow", "missing CRLF after data"],
)
def test_malformed_chunked_request_bodies_are_refused_and_the_proxy_keeps_serving(
    chunks: bytes, gateway: ProxyProcess, upstream: Upstream
) -> None:
    before_requests, before_bytes = upstream.requests, upstream.body_bytes
    data = request("POST", FREE, "Transfer-Encoding: chunked", body=chunks) + SMUGGLED
    result = exchange(gateway.port, data)
    # No complete request reached the upstream and the client got one error (granian answers
    # 500 when it cannot read the body it was promised; never a 2xx, never a second answer).
    assert upstream.requests == before_requests
    assert upstream.body_bytes - before_bytes <= 4
    assert len(result.responses) <= 1 and all(s >= 400 for s in result.statuses), result.raw
    assert exchange(gateway.port, request("GET", FREE)).statuses == [200]


@pytest.mark.parametrize("upgrade", ["h2c", "websocket"])
def test_upgrade_requests_never_reach_the_upstream_as_upgrades(
    upgrade: str, gateway: ProxyProcess, upstream: Upstream
) -> None:
    """h2c smuggling: an upstream that switched protocols would tunnel past every check."""
    before = upstream.requests
    result = exchange(
        gateway.port,
        request(
            "GET",
            FREE,
            "Connection: Upgrade, HTTP2-Settings",
            f"Upgrade: {upgrade}",
            "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
        ),
    )
    assert len(result.responses) == 1 and result.statuses[0] != 101, result.raw[:500]
    if result.statuses == [200]:
        names = {k.lower() for k, _ in result.responses[0].json()["raw_headers"]}
        assert not names & {"upgrade", "connection", "http2-settings"}, names
    assert_one_upstream_request_per_answer(result, upstream.requests - before)
