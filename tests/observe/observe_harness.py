"""Helpers for the observability tests: a real `mpp-proxy serve` (its stdout in a file, so a
busy access log never fills a pipe nobody reads), test-money payments, log lines."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from mpp_proxy.payments.testmoney import pay_challenge
from tests.cli.cli_harness import cli_env, free_port, wait_for_port

SECRET_KEY = "observe-test-secret-key-0123456789abcdef"
UPSTREAM_KEY = "sk-upstream-observe-key-4242424242"
METRICS_TOKEN = "metrics-bearer-token-9f8e7d6c5b4a"
WEBHOOK_SECRET = "whsec-observe-webhook-secret-1357"
# Every secret a test config holds: no log line may contain one.
SECRETS = (SECRET_KEY, UPSTREAM_KEY, METRICS_TOKEN, WEBHOOK_SECRET)

CONFIG = """
[proxy]
secret_key = "{secret}"
state = "sqlite:///{state}"
allow_test_payments = true
{extra}

[methods.play]
kind = "test"

[services.svc]
base_url = "{upstream}"
auth = {{ bearer = "{upstream_key}" }}
timeouts = {{ read = 1.0, connect = 2.0 }}

[services.svc.routes]
"GET /echo/free" = "free"
"GET /echo/paid" = {{ price = "0.01", pay_with = ["play"] }}
"GET /status/:code" = "free"
"GET /sleep" = "free"
"GET /response-headers" = "free"
"GET /status/paid/:code" = {{ price = "0.25", pay_with = ["play"] }}

[services.down]
base_url = "http://127.0.0.1:{closed}"
[services.down.routes]
"GET /x" = "free"
"""


def write_config(
    tmp_path: Path, upstream: str, extra: str = "", *, closed: int | None = None
) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(
        CONFIG.format(
            secret=SECRET_KEY,
            state=tmp_path / "state.db",
            upstream=upstream,
            upstream_key=UPSTREAM_KEY,
            closed=closed or free_port(),
            extra=extra,
        )
    )
    return path


class Gateway:
    """`mpp-proxy serve` in its own session; stdout and stderr go to files."""

    def __init__(self, config: Path, *, workers: int = 1, env: dict[str, str] | None = None):
        self.port = free_port()
        self.dir = config.parent
        self.out = self.dir / f"serve-{self.port}.out"
        self.err = self.dir / f"serve-{self.port}.err"
        args = ["serve", "--config", str(config), "--port", str(self.port)]
        args += ["--workers", str(workers)]
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mpp_proxy", *args],
                stdout=out,
                stderr=err,
                env=cli_env(env),
                cwd=self.dir,
                start_new_session=True,
            )
        wait_for_port(self.port, self.proc)  # type: ignore[arg-type]
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        """kill -9 the server and every worker (its whole session)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def reload(self) -> None:
        os.kill(self.proc.pid, signal.SIGHUP)

    def log_lines(self) -> list[dict[str, Any]]:
        """The JSON access log lines written so far."""
        lines = []
        for raw in self.out.read_text(errors="replace").splitlines():
            if raw.startswith("{"):
                lines.append(json.loads(raw))
        return lines

    def output(self) -> str:
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")


def pay(client: httpx.Client, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """GET a paid route: the 402, then the paid retry (test money) with `headers`."""
    first = client.get(url)
    assert first.status_code == 402, first.text
    credential = pay_challenge(first.headers.get_list("www-authenticate"))
    return client.get(url, headers={**(headers or {}), "Authorization": credential})


def wait_until(check: Callable[[], Any], timeout: float = 20.0, step: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


def samples(exposition: str) -> dict[str, float]:
    """`name{labels}` -> value for each sample line of a text exposition."""
    out: dict[str, float] = {}
    for line in exposition.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out
