"""The proxy served by granian (uvloop, HTTP/1) in a subprocess, as operators run it."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from core_harness import assert_streamed_one_by_one, event_arrivals

from tests.support.upstream import Upstream, spawn_upstream

ROOT = Path(__file__).resolve().parents[2]
GRANIAN = str(Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin" / "granian")
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


class Granian:
    def __init__(
        self,
        upstream_url: str,
        target: str = "tests.core.granian_app:app",
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        env = dict(os.environ, CORE_TEST_UPSTREAM=upstream_url, PYTHONPATH=str(ROOT))
        env.update(extra_env or {})
        self.proc = subprocess.Popen(
            [
                GRANIAN if os.path.exists(GRANIAN) else "granian",
                "--interface",
                "asgi",
                "--loop",
                "uvloop",
                "--http",
                "1",
                "--workers",
                "1",
                "--port",
                str(self.port),
                "--log-level",
                "critical",
                target,
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(self.url + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.stop()
                raise RuntimeError("granian did not start")
            time.sleep(0.05)

    def rss_bytes(self) -> int:
        """Resident memory of granian and its worker processes."""
        pids = [self.proc.pid]
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        pids += [int(p) for p in children.read_text().split()]
        total = 0
        for pid in pids:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        return total

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


@pytest.fixture(scope="module")
def granian(upstream: Upstream) -> Iterator[Granian]:
    g = Granian(upstream.url)
    try:
        yield g
    finally:
        g.stop()


@pytest.fixture
def client(granian: Granian) -> Iterator[httpx.Client]:
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
    granian: Granian, upstream: Upstream
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
    g = Granian(upstream.url, "mpp_proxy:app", {"MPP_PROXY_CONFIG": str(toml)})
    try:
        with httpx.Client(base_url=g.url) as c:
            assert c.get("/up/echo/toml?x=1").json()["path"] == "/echo/toml"
            r = c.post("/up/echo/toml")
            assert r.status_code == 405
            assert r.headers["allow"].startswith("GET")
            assert c.get("/readyz").status_code == 200
    finally:
        g.stop()


@pytest.mark.slow
def test_one_gib_response_streams_through_with_flat_rss() -> None:
    size = 1024 * MIB
    with spawn_upstream() as (url, _proc):
        g = Granian(url)
        try:
            with httpx.Client(base_url=g.url, timeout=60) as c:
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
        finally:
            g.stop()
    assert got == size
    # Buffers are bounded per connection: growth is noise, nowhere near the body size.
    assert after - before < 48 * MIB, (before, after)
