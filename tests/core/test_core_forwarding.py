"""Forwarding of free routes: what reaches the upstream, streaming both ways, reserved endpoints."""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest
from core_harness import Served, assert_streamed_one_by_one, config, event_arrivals, service

from mpp_proxy.core import Proxy
from tests.support.upstream import Upstream, pattern

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def client(served: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=20) as c:
        yield c


def raw_request(url: str, request: bytes) -> bytes:
    """Send bytes as they are (httpx would normalise the path) and read the whole answer."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(request)
        parts = []
        while chunk := s.recv(65536):
            parts.append(chunk)
    return b"".join(parts)


# ---------------------------------------------------------------------------- what is forwarded


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_method_path_query_and_body_are_preserved(client: httpx.Client, method: str) -> None:
    body = b"" if method in ("GET", "OPTIONS") else b'{"a": 1}'
    r = client.request(method, "/up/echo/a%20b/c;v=1?x=1&y=%2F&x=2&empty=", content=body)
    assert r.status_code == 200
    seen = r.json()
    assert seen["method"] == method
    assert seen["path"] == "/echo/a%20b/c;v=1"
    assert seen["query"] == "x=1&y=%2F&x=2&empty="
    assert seen["body"] == body.decode()


def test_path_is_forwarded_byte_for_byte(served: Served) -> None:
    answer = raw_request(
        served.url,
        b"GET /up/echo/%7Euser/A%41?q=%20 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    seen = orjson.loads(body)
    assert seen["path"] == "/echo/%7Euser/A%41"
    assert seen["query"] == "q=%20"


def test_upstream_base_path_is_prefixed(upstream: Upstream) -> None:
    app = Proxy(config(service("pre", upstream.url + "/echo/base/")))
    with Served(app) as s, httpx.Client(base_url=s.url) as c:
        assert c.get("/pre/v1/x?z=1").json()["path"] == "/echo/base/v1/x"


def test_upstream_status_and_body_pass_through_unchanged_on_free_routes(
    client: httpx.Client,
) -> None:
    for code in (201, 404, 500, 503):
        r = client.get(f"/up/status/{code}", params={"body": "upstream says hi"})
        assert r.status_code == code
        assert r.content == b"upstream says hi"


def test_compressed_bodies_pass_through_untouched(client: httpx.Client) -> None:
    params = [("Content-Encoding", "gzip"), ("Content-Type", "text/plain")]
    with client.stream("GET", "/up/response-headers", params=params) as r:
        # The upstream's bytes ("ok") are not gzip: a decompressing proxy would have failed.
        assert r.headers["content-encoding"] == "gzip"
        assert r.headers["content-length"] == "2"
        assert b"".join(r.iter_raw()) == b"ok"


# ---------------------------------------------------------------------------- streaming


def test_10_mib_upload_with_content_length_is_byte_exact(client: httpx.Client) -> None:
    data = pattern(10 * MIB)
    r = client.post("/up/echo/upload", content=data)
    assert r.json()["body_len"] == len(data)
    assert r.json()["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_10_mib_chunked_upload_streams_and_is_byte_exact(client: httpx.Client) -> None:
    data = pattern(10 * MIB)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(data), 100_000):
            yield data[i : i + 100_000]

    r = client.post("/up/echo/upload", content=chunks())
    assert r.status_code == 200, r.text  # a problem here names what failed
    seen = r.json()
    assert ["transfer-encoding", "chunked"] in seen["headers"]
    assert seen["body_len"] == len(data)
    assert seen["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_request_body_reaches_the_upstream_before_the_client_finished(
    client: httpx.Client, upstream: Upstream
) -> None:
    start = upstream.body_bytes
    streamed: list[bool] = []

    def chunks() -> Iterator[bytes]:
        yield b"a" * 1000
        # A buffering proxy would hold this first chunk until the body is complete.
        streamed.append(upstream.wait_until(lambda up: up.body_bytes - start >= 1000, 5))
        yield b"b" * 1000

    r = client.post("/up/echo/stream", content=chunks())
    assert r.json()["body_len"] == 2000
    assert streamed == [True]


@pytest.mark.parametrize("chunked", ["0", "1"])
def test_10_mib_download_is_byte_exact(client: httpx.Client, chunked: str) -> None:
    r = client.get("/up/bytes", params={"n": 10 * MIB, "chunked": chunked})
    assert r.status_code == 200
    assert r.content == pattern(10 * MIB)
    if chunked == "0":
        assert r.headers["content-length"] == str(10 * MIB)


def test_sse_events_arrive_one_by_one(client: httpx.Client) -> None:
    start = time.monotonic()
    with client.stream("GET", "/up/sse", params={"n": 5, "interval": 0.15}) as r:
        assert r.headers["content-type"] == "text/event-stream"
        arrivals = event_arrivals(r.iter_raw())
    assert_streamed_one_by_one(arrivals, start, 5)


def test_head_is_forwarded_and_answers_without_body(client: httpx.Client) -> None:
    r = client.head("/up/bytes", params={"n": 12345})
    assert r.status_code == 200
    assert r.headers["content-length"] == "12345"
    assert r.content == b""
    r = client.head("/strict/echo/items/7")  # a GET route answers HEAD
    assert r.status_code == 200
    assert r.content == b""


def test_keep_alive_reuses_one_upstream_connection_for_100_requests() -> None:
    with Upstream() as up:
        app = Proxy(config(service("up", up.url)))
        with Served(app) as s, httpx.Client(base_url=s.url) as c:
            for i in range(100):
                assert c.get(f"/up/echo/{i}").status_code == 200
        assert up.connections_total == 1
        assert up.requests == 100


def test_connection_close_from_upstream_is_not_reused(upstream: Upstream) -> None:
    app = Proxy(config(service("up", upstream.url)))
    with Served(app) as s, httpx.Client(base_url=s.url) as c:
        before = upstream.connections_total
        for _ in range(3):
            assert c.get("/up/close").content == b"bye"
        assert upstream.connections_total - before == 3
        assert app.pool("up").idle == 0


# ---------------------------------------------------------------------------- limits and errors


def test_body_over_the_service_limit_is_413_before_reading(client: httpx.Client) -> None:
    r = client.post("/small/echo/x", content=b"x" * 1001)
    assert r.status_code == 413
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["max_body_bytes"] == 1000
    assert client.post("/small/echo/x", content=b"x" * 1000).status_code == 200


def test_route_limit_overrides_the_service_limit(client: httpx.Client) -> None:
    assert client.post("/small/echo/limited", content=b"x" * 101).status_code == 413
    assert client.post("/small/echo/limited", content=b"x" * 100).status_code == 200


def test_chunked_body_over_the_limit_is_413(client: httpx.Client, upstream: Upstream) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(20):
            yield b"y" * 100

    r = client.post("/small/echo/x", content=chunks())
    assert r.status_code == 413


def test_unknown_service_is_404_problem(client: httpx.Client) -> None:
    r = client.get("/nope/v1/x")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith("/not-found")


def test_wrong_method_is_405_with_allow(client: httpx.Client) -> None:
    r = client.delete("/strict/echo/items/1")
    assert r.status_code == 405
    assert r.headers["content-type"] == "application/problem+json"
    assert "GET" in r.headers["allow"]


@pytest.mark.parametrize(
    "target", [b"/up/echo/../x", b"/up/echo/%2e%2e/x", b"/up/echo%2Fx", b"/up/a\\b"]
)
def test_unsafe_path_is_400_problem(served: Served, target: bytes) -> None:
    answer = raw_request(
        served.url, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    head, _, _body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    assert b"application/problem+json" in head


# ---------------------------------------------------------------------------- reserved endpoints


def test_healthz_and_readyz(client: httpx.Client) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    r = client.head("/healthz")
    assert r.status_code == 200 and r.content == b""
    r = client.post("/healthz")
    assert r.status_code == 405
    assert r.headers["allow"] == "GET, HEAD"


def test_readyz_is_503_when_the_store_is_unreachable(closed_port: int, upstream: Upstream) -> None:
    cfg = config(service("up", upstream.url))
    cfg = type(cfg)(
        proxy=type(cfg.proxy)(state=f"redis://127.0.0.1:{closed_port}/0"), services=cfg.services
    )
    app = Proxy(cfg)
    with Served(app, lifespan="off") as s, httpx.Client(base_url=s.url) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 503
        # Free routes do not need the store.
        assert c.get("/up/echo").status_code == 200


def test_discovery_documents_are_precomputed_and_cacheable(client: httpx.Client) -> None:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["cache-control"] == "public, max-age=300"
    assert r.json()["openapi"].startswith("3.1")
    r = client.get("/llms.txt")
    assert r.headers["content-type"] == "text/markdown; charset=utf-8"
    assert r.headers["cache-control"] == "public, max-age=300"
    assert client.head("/llms.txt").content == b""
