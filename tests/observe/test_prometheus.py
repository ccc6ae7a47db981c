"""A real Prometheus scrapes a 2-worker `mpp-proxy serve`: counts summed over the workers,
revenue equal to the ledger's, counters that survive a SIGHUP reload, promtool-clean output."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from observe_harness import Gateway, pay, samples, wait_until, write_config

from mpp_proxy.state.sqlite import SQLiteStore
from tests.support.ports import free_port
from tests.support.upstream import Upstream

FREE, PAID = 1000, 100
SCRAPE = """
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: mpp-proxy
    metrics_path: /metrics
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


class Prometheus:
    """`prometheus` on a free loopback port, scraping one target every second."""

    def __init__(self, work: Path, target: int) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is not installed: run `make tools`")
        config = work / "prometheus.yml"
        config.write_text(SCRAPE.format(port=target))
        self.port = free_port()
        self.log = (work / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={work / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=self.log,
            stderr=self.log,
        )
        self.api = f"http://127.0.0.1:{self.port}"
        wait_until(self._ready, timeout=30)

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited with {self.proc.returncode}")
        try:
            return httpx.get(self.api + "/-/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def value(self, query: str) -> float | None:
        r = httpx.get(self.api + "/api/v1/query", params={"query": query}, timeout=5)
        result = r.json()["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    with Upstream() as up:
        gw = Gateway.started(write_config(tmp_path, up.url), workers=2)
        try:
            yield gw
        finally:
            gw.stop()


def free_batch(url: str, n: int) -> set[str]:
    """`n` free requests on one connection; the worker prefixes of their request ids."""
    with httpx.Client() as client:
        workers = set()
        for _ in range(n):
            r = client.get(url)
            assert r.status_code == 200
            workers.add(r.headers["x-request-id"].split("-")[0])
        return workers


def ledger_revenue(path: Path) -> Decimal:
    async def totals() -> Decimal:
        store = SQLiteStore(str(path))
        await store.open()
        try:
            rows = await store.totals()
        finally:
            await store.close()
        return sum((Decimal(t.amount).scaleb(-2) for t in rows), Decimal(0))

    return asyncio.run(totals())


def test_prometheus_sees_every_request_of_both_workers_and_the_ledgers_revenue(
    gateway: Gateway, tmp_path: Path
) -> None:
    prometheus = Prometheus(tmp_path, gateway.port)
    try:
        free = gateway.url + "/svc/echo/free"
        with ThreadPoolExecutor(8) as pool:
            workers = set().union(*pool.map(lambda _: free_batch(free, FREE // 20), range(20)))
        assert len(workers) == 2, "both workers served requests"
        with httpx.Client() as client:
            for _ in range(PAID):
                assert pay(client, gateway.url + "/svc/echo/paid").status_code == 200

        free_q = 'sum(mpp_proxy_requests_total{route="GET /echo/free",status="200"})'
        paid = 'route="GET /echo/paid"'
        expected = {
            free_q: FREE,
            f'sum(mpp_proxy_requests_total{{{paid},status="200"}})': PAID,
            f'sum(mpp_proxy_requests_total{{{paid},status="402"}})': PAID,
            f"sum(mpp_proxy_challenges_total{{{paid}}})": PAID,
            f'sum(mpp_proxy_payments_total{{{paid},outcome="delivered"}})': PAID,
            "sum(mpp_proxy_request_duration_seconds_count)": FREE + 2 * PAID,
        }

        def scraped() -> dict[str, float | None]:
            return {query: prometheus.value(query) for query in expected}

        # Exactly these counts, once the last scrape has seen every worker's last flush.
        wait_until(lambda: scraped() == expected, timeout=30, step=0.5)
        revenue = prometheus.value(f"sum(mpp_proxy_revenue_total{{{paid}}})")
        ledger = ledger_revenue(tmp_path / "state.db")
        assert ledger == Decimal("1.00")
        assert revenue is not None and abs(Decimal(str(revenue)) - ledger) < Decimal("1e-9")

        # Whichever worker answers a scrape reports the whole server.
        for _ in range(6):
            with httpx.Client() as client:
                got = samples(client.get(gateway.url + "/metrics").text)
            labels = 'route="GET /echo/free",service="svc",source="upstream",status="200"'
            assert got["mpp_proxy_requests_total{" + labels + "}"] == FREE

        # A SIGHUP reload replaces both workers; the counters carry on from where they were.
        gateway.reload()
        wait_until(
            lambda: prometheus.value('sum(mpp_proxy_config_reloads_total{result="success"})') == 1,
            timeout=30,
        )
        wait_until(lambda: _served_by_new_workers(free, workers), timeout=30)
        # The new workers counted from zero in files of their own; the old ones' stay summed.
        wait_until(lambda: (prometheus.value(free_q) or 0) > FREE, timeout=30, step=0.5)
    finally:
        prometheus.stop()


def _served_by_new_workers(url: str, old: set[str]) -> bool:
    with httpx.Client() as client:
        r = client.get(url)
    return r.status_code == 200 and r.headers["x-request-id"].split("-")[0] not in old


def test_promtool_accepts_the_exposition(gateway: Gateway) -> None:
    with httpx.Client() as client:
        client.get(gateway.url + "/svc/echo/free")
        pay(client, gateway.url + "/svc/echo/paid")
        client.get(gateway.url + "/down/x")
        client.get(gateway.url + "/nowhere")
        wait_until(lambda: "revenue_total" in client.get(gateway.url + "/metrics").text)
        text = client.get(gateway.url + "/metrics").text
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is not installed: run `make tools`"
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    for name in (
        "mpp_proxy_requests_total",
        "mpp_proxy_request_duration_seconds",
        "mpp_proxy_upstream_response_seconds",
        "mpp_proxy_upstream_errors_total",
        "mpp_proxy_challenges_total",
        "mpp_proxy_payments_total",
        "mpp_proxy_revenue_total",
        "mpp_proxy_in_flight_requests",
        "mpp_proxy_upstream_connections",
        "mpp_proxy_build_info",
        "mpp_proxy_config_loaded_timestamp_seconds",
        "mpp_proxy_credits_outstanding",
    ):
        assert name in names, name
