"""Shared by the limit tests: a proxy.toml with test money, served in process, and paying."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from mpp_proxy.client.testmoney import pay_challenge
from mpp_proxy.config import load_config
from mpp_proxy.core import Proxy
from mpp_proxy.payments.credentials import ledger_key
from mpp_proxy.state.base import Payment
from tests.support.served import Served

SECRET = "limits-test-secret-0123456789abcdef0123"
PAID = 'price = "0.05", pay_with = ["play"]'


def proxy_toml(
    routes: str, *, url: str, service: str = "", proxy: str = "", state: str = "memory://"
) -> str:
    """A config with test money and one service `api` in front of `url`; `routes` are its
    route lines, `service` and `proxy` more lines of those tables."""
    return "\n".join(
        [
            "[proxy]",
            f'secret_key = "{SECRET}"',
            'realm = "limits.test"',
            f'state = "{state}"',
            "allow_test_payments = true",
            textwrap.dedent(proxy),
            "[methods.play]",
            'kind = "test"',
            "[services.api]",
            f'base_url = "{url}"',
            "timeouts = { connect = 2, read = 15, write = 5, pool = 1 }",
            textwrap.dedent(service),
            "[services.api.routes]",
            textwrap.dedent(routes),
            "",
        ]
    )


@contextlib.contextmanager
def serving(tmp_path: Path, text: str) -> Iterator[tuple[Proxy, httpx.Client]]:
    """The config served in process (uvicorn on a loopback port) and a client for it."""
    path = tmp_path / "proxy.toml"
    path.write_text(text)
    app = Proxy(load_config(path, {}))
    with Served(app) as served, httpx.Client(base_url=served.url, timeout=30) as client:
        yield app, client


def pay(client: httpx.Client, url: str, payer: str | None = None) -> str:
    """A test-money credential for a GET of `url` (asking for the 402 first)."""
    r = client.get(url)
    assert r.status_code == 402, r.text
    challenges = r.headers.get_list("www-authenticate")
    return pay_challenge(challenges) if payer is None else pay_challenge(challenges, payer)


def ledger_row(app: Proxy, credential: str) -> Payment | None:
    """The ledger row of a credential (the store is in process memory)."""
    key = ledger_key(credential.removeprefix("Payment "))
    return asyncio.run(app.store.get_payment(key))


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Whether `condition` holds within `timeout` (a ledger row is written just after the
    response's last byte went out, so a client may look before it is)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def check(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "proxy.toml"
    path.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "mpp_proxy", "check", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
