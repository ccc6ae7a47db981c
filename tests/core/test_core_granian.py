"""The proxy served by granian (uvloop, HTTP/1) in a subprocess, as operators run it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from core_harness import assert_streamed_one_by_one, event_arrivals

from tests.support.proxy_process import ProxyProcess
from tests.support.upstream import Upstream, spawn_upstream

MIB = 1024 * 1024


def granian_app(upstream_url: str, folder: Path) -> ProxyProcess:
    """granian serving the test target in front of `upstream_url`."""
    return ProxyProcess.granian(
        "tests.core.granian_app:app", folder=folder, env={"CORE_TEST_UPSTREAM": upstream_url}
    )


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


@pytest.fixture(scope="module")
def granian(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyProcess]:
    with granian_app(upstream.url, tmp_path_factory.mktemp("granian")) as g:
        yield g


@pytest.fixture
def client(granian: ProxyProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=granian.url, timeout=20) as c:
        yield c


def test_granian_forwards_and_reuses_one_upstream_connection(
    client: httpx.Client, upstream: Upstream
) -> None:
    before = upstream.connections_total
    for i in range(100):
        r = client.post(f"/up/echo/{i}?q={i}", content=b"x" * i)
        assert r.json()["path"] == f"/echo/{i}"
        assert r.json()["body_len"] == i
    assert upstream.connections_total - before <= 1


def test_granian_head_and_problems(client: httpx.Client) -> None:
    r = client.head("/up/bytes", params={"n": 1000})
    assert r.status_code == 200
    assert r.headers["content-length"] == "1000"
    assert r.content == b""
    r = client.get("/nope/x")
    assert r.status_code == 404
    assert r.headers["content-type"] == "application/problem+json"


def test_granian_streams_sse_event_by_event(client: httpx.Client) -> None:
    start = time.monotonic()
    with client.stream("GET", "/up/sse", params={"n": 5, "interval": 0.15}) as r:
        arrivals = event_arrivals(r.iter_raw())
    assert_streamed_one_by_one(arrivals, start, 5)


def test_granian_aborts_the_response_when_the_upstream_resets(client: httpx.Client) -> None:
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.get("/up/reset-mid-body", params={"n": 1_000_000})


def test_granian_client_disconnect_closes_the_upstream_connection(
    granian: ProxyProcess, upstream: Upstream
) -> None:
    with httpx.Client(base_url=granian.url) as c, c.stream("GET", "/up/sse?n=1000") as r:
        events = r.iter_raw()
        assert next(events).startswith(b"data: 0\n\n")
        assert upstream.connections_open >= 1
        opened = upstream.connections_total
    assert upstream.wait_until(lambda up: up.connections_open == 0)
    # The next request needs a fresh connection: the aborted one was not pooled.
    with httpx.Client(base_url=granian.url) as c:
        assert c.get("/up/echo").status_code == 200
    assert upstream.connections_total == opened + 1


def test_granian_serves_mpp_proxy_app_from_mpp_proxy_config(
    upstream: Upstream, tmp_path: Path
) -> None:
    toml = tmp_path / "proxy.toml"
    toml.write_text(
        f"""
[proxy]
state = "memory://"

[services.up]
base_url = "{upstream.url}"
[services.up.routes]
"GET /echo/*" = "free"
"""
    )
    with (
        ProxyProcess.granian("mpp_proxy:app", folder=tmp_path, config=toml) as g,
        httpx.Client(base_url=g.url) as c,
    ):
        assert c.get("/up/echo/toml?x=1").json()["path"] == "/echo/toml"
        r = c.post("/up/echo/toml")
        assert r.status_code == 405
        assert r.headers["allow"].startswith("GET")
        assert c.get("/readyz").status_code == 200


@pytest.mark.slow
def test_one_gib_response_streams_through_with_flat_rss(tmp_path: Path) -> None:
    size = 1024 * MIB
    with (
        spawn_upstream() as (url, _proc),
        granian_app(url, tmp_path) as g,
        httpx.Client(base_url=g.url, timeout=60) as c,
    ):
        warm = c.get("/up/bytes", params={"n": 16 * MIB})
        assert len(warm.content) == 16 * MIB
        del warm
        before = g.rss_bytes()
        got = 0
        with c.stream("GET", "/up/bytes", params={"n": size}) as r:
            assert r.headers["content-length"] == str(size)
            for chunk in r.iter_raw(1 << 20):
                got += len(chunk)
        after = g.rss_bytes()
    assert got == size
    # Buffers are bounded per connection: growth is noise, nowhere near the body size.
    assert after - before < 48 * MIB, (before, after)
