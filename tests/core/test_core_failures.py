"""Upstream and client failures: statuses, aborted responses, and what happens to connections."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import pytest
from core_harness import Served, config, service, wait_for

from mpp_proxy.config.model import Timeouts
from mpp_proxy.core import Proxy
from tests.support.upstream import Upstream

FAST = Timeouts(connect=1.0, read=0.3, write=1.0, pool=0.2)


@pytest.fixture
def fresh_upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


def problem_of(r: httpx.Response, status: int, slug: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith("/" + slug)
    assert r.json()["status"] == status


def test_connection_refused_is_502(closed_port: int) -> None:
    app = Proxy(config(service("down", f"http://127.0.0.1:{closed_port}")))
    with Served(app) as s, httpx.Client(base_url=s.url) as c:
        problem_of(c.get("/down/x"), 502, "upstream-unreachable")


def test_dns_failure_is_502() -> None:
    app = Proxy(config(service("nx", "http://no-such-host.invalid", timeouts=FAST)))
    with Served(app) as s, httpx.Client(base_url=s.url, timeout=10) as c:
        r = c.get("/nx/x")
        # Resolvers without network answer at once (502); a stalled one hits the connect timeout.
        assert r.status_code in (502, 504)
        assert r.headers["content-type"] == "application/problem+json"


def test_slow_upstream_is_504(upstream: Upstream) -> None:
    app = Proxy(config(service("slow", upstream.url, timeouts=FAST)))
    with Served(app) as s, httpx.Client(base_url=s.url, timeout=10) as c:
        problem_of(c.get("/slow/sleep", params={"s": 2}), 504, "upstream-timeout")
        # The timed-out connection was not returned to the pool.
        assert wait_for(lambda: app.pool("slow").in_use == 0)
        assert app.pool("slow").idle == 0


def test_pool_wait_timeout_is_504(upstream: Upstream) -> None:
    t = Timeouts(connect=1.0, read=5.0, write=1.0, pool=0.2)
    app = Proxy(config(service("one", upstream.url, timeouts=t, max_connections=1)))
    with Served(app) as s, httpx.Client(base_url=s.url, timeout=10) as c:
        holder = threading.Thread(target=lambda: c.get("/one/sleep", params={"s": 1}))
        holder.start()
        assert wait_for(lambda: app.pool("one").in_use == 1)
        r = c.get("/one/echo")
        holder.join()
        problem_of(r, 504, "upstream-timeout")
        assert "pool" in r.json()["detail"]
        # Once the slot is free, the next request goes through.
        assert c.get("/one/echo").status_code == 200


def test_invalid_upstream_response_is_502(upstream: Upstream) -> None:
    app = Proxy(config(service("up", upstream.url)))
    with Served(app) as s, httpx.Client(base_url=s.url) as c:
        problem_of(c.get("/up/garbage"), 502, "bad-upstream-response")


def test_upstream_reset_mid_body_leaves_the_client_with_an_incomplete_response(
    fresh_upstream: Upstream,
) -> None:
    app = Proxy(config(service("up", fresh_upstream.url)))
    with Served(app) as s, httpx.Client(base_url=s.url) as c:
        received = bytearray()
        with (
            pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)),
            c.stream("GET", "/up/reset-mid-body", params={"n": 1_000_000}) as r,
        ):
            assert r.status_code == 200
            assert r.headers["content-length"] == "1000000"
            for chunk in r.iter_raw():
                received += chunk
        assert len(received) < 1_000_000
        assert wait_for(lambda: app.pool("up").in_use == 0)
        assert app.pool("up").idle == 0


def test_upstream_read_timeout_mid_body_aborts_the_client_response(upstream: Upstream) -> None:
    app = Proxy(config(service("slow", upstream.url, timeouts=FAST)))
    with (
        Served(app) as s,
        httpx.Client(base_url=s.url, timeout=10) as c,
        pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)),
    ):
        c.get("/slow/sleep", params={"s": 2, "body": 1})


def test_chunked_upstream_reset_is_never_completed(fresh_upstream: Upstream) -> None:
    # Without content-length the client can only tell by the missing last chunk.
    app = Proxy(config(service("up", fresh_upstream.url)))
    with (
        Served(app) as s,
        httpx.Client(base_url=s.url) as c,
        pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)),
    ):
        c.get("/up/reset-mid-body", params={"n": 1_000_000, "sent": 100_000})


def test_client_disconnect_mid_stream_frees_the_connection(fresh_upstream: Upstream) -> None:
    app = Proxy(config(service("up", fresh_upstream.url)))
    with Served(app) as s:
        with (
            httpx.Client(base_url=s.url) as c,
            c.stream("GET", "/up/sse", params={"n": 1000, "interval": 0.05}) as r,
        ):
            events = r.iter_raw()
            assert next(events).startswith(b"data: 0\n\n")
            assert app.pool("up").in_use == 1
        # The client is gone: the exchange is cancelled and its connection closed, not pooled.
        assert wait_for(lambda: app.pool("up").in_use == 0)
        assert app.pool("up").idle == 0
        assert fresh_upstream.wait_until(lambda up: up.connections_open == 0)


def test_client_disconnect_while_waiting_for_the_head_frees_the_connection(
    fresh_upstream: Upstream,
) -> None:
    app = Proxy(config(service("up", fresh_upstream.url)))
    with Served(app) as s:
        with (
            httpx.Client(base_url=s.url, timeout=0.3) as c,
            pytest.raises(httpx.ReadTimeout),
        ):
            c.get("/up/sleep", params={"s": 1.5})
        assert wait_for(lambda: app.pool("up").in_use == 0)
        assert app.pool("up").idle == 0
        assert fresh_upstream.wait_until(lambda up: up.connections_open == 0)
        assert fresh_upstream.connections_total == 1


def test_stale_keep_alive_connection_is_replayed_once(fresh_upstream: Upstream) -> None:
    app = Proxy(config(service("up", fresh_upstream.url)))
    with Served(app) as s, httpx.Client(base_url=s.url) as c:
        assert c.get("/up/echo").status_code == 200
        # Reuses the idle connection; the upstream closes it unanswered, as a server whose
        # keep-alive timer fired at that moment would. Nothing reached the application: replay.
        r = c.get("/up/drop-if-reused")
        assert r.status_code == 200
        assert r.content == b"fresh"
        assert fresh_upstream.connections_total == 2


def test_non_idempotent_request_is_not_replayed(fresh_upstream: Upstream) -> None:
    app = Proxy(config(service("up", fresh_upstream.url)))
    with Served(app) as s, httpx.Client(base_url=s.url) as c:
        assert c.get("/up/echo").status_code == 200
        # The upstream may have acted on a POST it never answered: no silent second attempt.
        r = c.post("/up/drop-if-reused", content=b"charge me once")
        problem_of(r, 502, "bad-upstream-response")
        assert fresh_upstream.requests == 2


def test_an_early_upstream_answer_during_an_upload_is_the_response(
    fresh_upstream: Upstream,
) -> None:
    app = Proxy(config(service("up", fresh_upstream.url)))
    with Served(app) as s, httpx.Client(base_url=s.url, timeout=10) as c:
        r = c.post("/up/reject-upload", content=b"x" * (10 * 1024 * 1024))
        assert r.status_code == 401
        assert r.json() == {"error": "no"}
        assert wait_for(lambda: app.pool("up").in_use == 0)
        assert app.pool("up").idle == 0


def test_pool_is_lifo_and_bounded(fresh_upstream: Upstream) -> None:
    app = Proxy(config(service("up", fresh_upstream.url, max_connections=4)))
    with Served(app) as s, httpx.Client(base_url=s.url, timeout=10) as c:
        threads = [
            threading.Thread(target=lambda: c.get("/up/sleep", params={"s": 0.3})) for _ in range(8)
        ]
        for t in threads:
            t.start()
        assert wait_for(lambda: app.pool("up").in_use == 4)
        for t in threads:
            t.join()
        pool = app.pool("up")
        assert pool.opened == 4
        assert pool.in_use == 0
        assert pool.idle == 4
        # Sequential traffic keeps using the most recently released connection only.
        for _ in range(10):
            assert c.get("/up/echo").status_code == 200
        assert pool.opened == 4
        assert fresh_upstream.connections_total == 4
