"""Helpers for the observability tests: a real `mpp-proxy serve` (its stdout in a file, so a
busy access log never fills a pipe nobody reads), test-money payments, log lines."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from mpp_proxy.client.testmoney import pay_challenge
from tests.support.ports import free_port
from tests.support.proxy_process import ProxyProcess

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
decimals = 2

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
"GET /status/first/:code" = {{ price = "0.25", pay_with = ["play"], settle = "before" }}

[services.slow]
base_url = "{upstream}"
[services.slow.routes]
"GET /sleep" = {{ price = "0.05", pay_with = ["play"] }}

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


class Gateway(ProxyProcess):
    """`mpp-proxy serve` of a test config (ProxyProcess: stdout and stderr in files) and the
    JSON access log lines it wrote."""

    @classmethod
    def started(cls, config: Path, *, workers: int = 1) -> Gateway:
        gw = cls.serve("--config", str(config), "--workers", str(workers), folder=config.parent)
        assert isinstance(gw, Gateway)
        gw.start()
        return gw

    def reload(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGHUP)

    def log_lines(self) -> list[dict[str, Any]]:
        """The JSON access log lines written so far."""
        lines = []
        for raw in self.streams()[0].splitlines():
            if raw.startswith("{"):
                lines.append(json.loads(raw))
        return lines


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


class Receiver:
    """A webhook receiver on loopback that checks signatures the way an operator would."""

    def __init__(self, port: int = 0) -> None:
        self.received: list[dict[str, Any]] = []
        self.bad_signatures = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                header = self.headers["Mpp-Signature"] or ""
                if not _stripe_style_check(WEBHOOK_SECRET, body, header):
                    receiver.bad_signatures += 1
                    self.send_response(400)
                    self.end_headers()
                    return
                receiver.received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def ids(self) -> list[str]:
        return [e["id"] for e in self.received]


def _stripe_style_check(secret: str, body: bytes, header: str) -> bool:
    """Verification as the README shows it, written independently of our own verify()."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    signed = parts["t"].encode() + b"." + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - int(parts["t"])) < 300
    return fresh and hmac.compare_digest(expected, parts["v1"])
