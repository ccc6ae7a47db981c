"""A limit is one limit however the proxy is deployed: across granian workers on Redis and on
SQLite, and across two instances on one Redis behind an nginx round-robin balancer.

Each run sends 1,000 requests to a route limited to 100 per minute, counted by route (every
caller together). Exactly 100 pass at once (the burst is the whole count), plus the one
request the bucket refills every 0.6 s while the run lasts: the bound asserted is
100 <= passed <= 100 + elapsed / 0.6 + 1, and a limit split per worker or per instance would
let about 200 through.
"""

from __future__ import annotations

import contextlib
import math
import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from limits_support import proxy_toml

from benchmarks.procs import cpu_seconds, ensure_debian_packages, process_tree
from tests.support.ports import free_port
from tests.support.proxy_process import ProxyProcess
from tests.support.upstream import Upstream

REQUESTS = 1000
CONNECTIONS = 16
ROUTE = '"GET /echo/*" = { limits = [{ rate = "100/minute", key = "route" }] }'


def hammer(base_urls: Sequence[str]) -> tuple[Counter[int], float]:
    """REQUESTS GETs, each on a fresh connection (so the server spreads them over its
    workers), round-robin over `base_urls`; the statuses and how long it took."""

    local = threading.local()

    def one(n: int) -> int:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = httpx.Client(timeout=30)
        url = f"{base_urls[n % len(base_urls)]}/api/echo/{n}"
        return client.get(url, headers={"Connection": "close"}).status_code

    start = time.monotonic()
    with ThreadPoolExecutor(CONNECTIONS) as pool:
        statuses = Counter(pool.map(one, range(REQUESTS)))
    return statuses, time.monotonic() - start


def assert_one_limit(statuses: Counter[int], elapsed: float) -> None:
    assert set(statuses) <= {200, 429}, statuses
    passed = statuses[200]
    assert 100 <= passed <= 100 + math.floor(elapsed / 0.6) + 1, (passed, elapsed)


def worker_cpu(server: ProxyProcess) -> dict[int, float]:
    assert server.proc is not None
    return {pid: cpu_seconds([pid]) for pid in process_tree(server.proc.pid)}


def assert_both_workers_served(before: dict[int, float], after: dict[int, float]) -> None:
    busy = [pid for pid in after if after[pid] - before.get(pid, 0.0) >= 0.05]
    assert len(busy) >= 2, (before, after)


@contextlib.contextmanager
def proxy(tmp_path: Path, name: str, text: str, workers: int) -> Iterator[ProxyProcess]:
    """`mpp-proxy serve --workers N` on the config, as an operator runs it."""
    config = tmp_path / f"{name}.toml"
    config.write_text(text)
    server = ProxyProcess.serve("--config", str(config), "--workers", str(workers), folder=tmp_path)
    with server:
        yield server


@pytest.mark.parametrize("backend", ["redis", "sqlite"])
def test_a_limit_is_one_limit_across_two_workers(
    backend: str, tmp_path: Path, upstream: Upstream, request: pytest.FixtureRequest
) -> None:
    if backend == "redis":
        port = request.getfixturevalue("redis_port")
        state = f"redis://127.0.0.1:{port}/0?key_prefix=workers-{time.time_ns()}:"
    else:
        state = f"sqlite:///{tmp_path / 'state.db'}"
    text = proxy_toml(ROUTE, url=upstream.url, state=state)
    with proxy(tmp_path, backend, text, workers=2) as server:
        before = worker_cpu(server)
        statuses, elapsed = hammer([server.url])
        assert_both_workers_served(before, worker_cpu(server))
    assert_one_limit(statuses, elapsed)


def nginx_round_robin(prefix: Path, backends: Sequence[int]) -> tuple[Path, int]:
    """An nginx config balancing round-robin over `backends`, logging who served each."""
    port = free_port()
    temp = prefix / "nginx-tmp"
    temp.mkdir()
    servers = " ".join(f"server 127.0.0.1:{p};" for p in backends)
    # As root, nginx workers would drop to nobody and could not write into our temp directory.
    user = "user root;" if os.geteuid() == 0 else ""
    conf = prefix / "balancer.conf"
    conf.write_text(
        f"""
{user}
daemon off;
worker_processes 1;
pid {prefix}/balancer.pid;
error_log {prefix}/balancer-error.log warn;
events {{ worker_connections 1024; }}
http {{
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    log_format upstreams '$upstream_addr $status';
    access_log {prefix}/balancer-access.log upstreams;
    upstream proxies {{ {servers} }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://proxies;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}
}}
"""
    )
    return conf, port


def test_a_limit_on_redis_is_one_limit_across_two_instances_behind_nginx(
    tmp_path: Path, upstream: Upstream, redis_port: int
) -> None:
    ensure_debian_packages({"nginx": "nginx"})
    state = f"redis://127.0.0.1:{redis_port}/0?key_prefix=instances-{time.time_ns()}:"
    text = proxy_toml(
        ROUTE, url=upstream.url, state=state, proxy='trusted_proxies = ["127.0.0.1/32"]'
    )
    with (
        proxy(tmp_path, "one", text, workers=1) as one,
        proxy(tmp_path, "two", text, workers=1) as two,
    ):
        conf, port = nginx_round_robin(tmp_path, [one.port, two.port])
        balancer = subprocess.Popen(
            ["nginx", "-p", str(tmp_path), "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "nginx did not start"
                    time.sleep(0.05)
            statuses, elapsed = hammer([f"http://127.0.0.1:{port}"])
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(balancer.pid, 15)
            balancer.wait(10)
    assert_one_limit(statuses, elapsed)
    served = Counter(
        line.split()[0] for line in (tmp_path / "balancer-access.log").read_text().splitlines()
    )
    # Round robin: each instance took half of the run (the health check is one more).
    assert served[f"127.0.0.1:{one.port}"] >= REQUESTS // 2
    assert served[f"127.0.0.1:{two.port}"] >= REQUESTS // 2
