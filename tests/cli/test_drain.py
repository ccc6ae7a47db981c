"""SIGTERM drains `mpp-proxy serve`: /readyz turns 503 at once, the listener serves on for
--drain-seconds, in-flight requests finish (or are cancelled, and credited, at --graceful-timeout),
and the process exits 0."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from cli_harness import run_cli

from tests.support.play_money import buy, play_money_config
from tests.support.proxy_process import ProxyProcess
from tests.support.upstream import Upstream

SERVICES = {
    "svc": {"GET /sleep": "free", "GET /echo/free": "free"},
    "paid": {"GET /sleep": "0.01"},
}


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


def start(
    serve: Callable[..., ProxyProcess],
    tmp_path: Path,
    upstream: Upstream,
    *args: str,
    settlement: str = "after",
) -> tuple[ProxyProcess, str]:
    path = tmp_path / "proxy.toml"
    state = tmp_path / "state.db"
    path.write_text(
        play_money_config(
            upstream.url,
            SERVICES,
            secret="d" * 40,
            state=f"sqlite:///{state}",
            method=f'settlement = "{settlement}"',
        )
    )
    served = serve("--config", str(path), *args)
    return served, served.url


class InFlight(threading.Thread):
    """One request in its own thread, on its own connection: its status, or the error."""

    def __init__(self, url: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.headers = headers or {}
        self.status: int | None = None
        self.error: Exception | None = None
        self.start()

    def run(self) -> None:
        try:
            self.status = httpx.get(self.url, headers=self.headers, timeout=60).status_code
        except httpx.HTTPError as exc:
            self.error = exc


def test_sigterm_turns_readyz_503_at_once_serves_on_and_lets_the_request_finish(
    serve: Callable[..., ProxyProcess], tmp_path: Path, upstream: Upstream
) -> None:
    served, url = start(serve, tmp_path, upstream, "--workers", "2", "--drain-seconds", "2")
    slow = InFlight(f"{url}/svc/sleep?s=3")
    assert upstream.wait_until(lambda up: up.requests >= 1)

    with httpx.Client(base_url=url, timeout=5) as probe:
        assert probe.get("/readyz").status_code == 200
        signalled = time.monotonic()
        served.proc.send_signal(signal.SIGTERM)
        while probe.get("/readyz").status_code != 503:
            assert time.monotonic() - signalled < 5, "/readyz never turned 503"
        turned = time.monotonic() - signalled
    # Live, not ready, and still taking new connections, whichever worker accepts them.
    for _ in range(6):
        with httpx.Client(base_url=url, timeout=5) as fresh:
            assert fresh.get("/readyz").status_code == 503
            assert fresh.get("/healthz").status_code == 200
            assert fresh.get("/svc/echo/free").status_code == 200
    assert served.proc.poll() is None

    slow.join(15)
    assert (slow.status, slow.error) == (200, None)
    assert served.proc.wait(15) == 0
    served.stop()
    out, _ = served.streams()
    assert "SIGTERM: /readyz answers 503; serving on for 2s" in out
    print(f"/readyz turned 503 {turned * 1000:.1f} ms after SIGTERM")
    assert turned < 0.1, f"/readyz turned 503 {turned * 1000:.0f} ms after SIGTERM"


def test_the_listener_closes_when_the_drain_is_over_while_the_request_finishes(
    serve: Callable[..., ProxyProcess], tmp_path: Path, upstream: Upstream
) -> None:
    served, url = start(serve, tmp_path, upstream, "--drain-seconds", "0.5")
    slow = InFlight(f"{url}/svc/sleep?s=3")
    assert upstream.wait_until(lambda up: up.requests >= 1)
    served.proc.send_signal(signal.SIGTERM)
    time.sleep(1.5)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/healthz", timeout=2)
    slow.join(15)
    assert (slow.status, slow.error) == (200, None)
    assert served.proc.wait(15) == 0


def test_a_second_sigterm_skips_the_rest_of_the_drain(
    serve: Callable[..., ProxyProcess], tmp_path: Path, upstream: Upstream
) -> None:
    served, url = start(serve, tmp_path, upstream, "--drain-seconds", "60")
    slow = InFlight(f"{url}/svc/sleep?s=2")
    assert upstream.wait_until(lambda up: up.requests >= 1)
    served.proc.send_signal(signal.SIGTERM)
    assert wait_for_readyz(url, 503)
    served.proc.send_signal(signal.SIGTERM)
    slow.join(15)
    assert (slow.status, slow.error) == (200, None)  # in flight: still finished
    assert served.proc.wait(15) == 0  # long before the 60 s drain


def wait_for_readyz(url: str, status: int) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/readyz", timeout=2).status_code == status:
            return True
    return False


@pytest.mark.parametrize(
    ("settlement", "outcome"),
    [("before", " credited "), ("after", " released ")],
    ids=["settled first: credited", "settled after success: nothing charged"],
)
def test_a_paid_request_still_running_at_the_graceful_timeout_is_not_lost(
    serve: Callable[..., ProxyProcess],
    tmp_path: Path,
    upstream: Upstream,
    settlement: str,
    outcome: str,
) -> None:
    served, url = start(
        serve,
        tmp_path,
        upstream,
        "--drain-seconds",
        "0.2",
        "--graceful-timeout",
        "1",
        settlement=settlement,
    )
    paid = f"{url}/paid/sleep?s=20"
    credential = asyncio.run(buy(paid))
    stuck = InFlight(paid, {"Authorization": credential})
    assert upstream.wait_until(lambda up: up.requests >= 1)
    signalled = time.monotonic()
    served.proc.send_signal(signal.SIGTERM)
    assert served.proc.wait(30) == 0
    stopped = time.monotonic() - signalled
    stuck.join(5)
    assert stuck.status != 200  # the caller did not get what it paid for...
    ledger = run_cli("ledger", "--config", str(tmp_path / "proxy.toml"))
    assert ledger.code == 0, ledger.err
    payments = ledger.out.partition("latest payments")[2]
    # ...so its payment is a credit, or (settled after success) was never taken.
    assert payments.count(outcome) == 1, ledger.out
    assert stopped < 15  # the 20 s upstream call did not hold the shutdown
    served.stop()
    out, err = served.streams()
    assert "graceful timeout reached: cancelled 1 request(s) still running" in out + err
