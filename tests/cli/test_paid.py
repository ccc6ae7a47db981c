"""Paid routes through `serve`: replay refused across processes and workers; `pay` pays them."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from cli_harness import run_cli

from tests.support.play_money import buy
from tests.support.proxy_process import ProxyProcess
from tests.support.upstream import Upstream

CONFIG = """
[proxy]
secret_key = "{secret}"
state = "sqlite:///{state}"
allow_test_payments = true

[methods.play]
kind = "test"

[services.svc]
base_url = "{upstream}"

[services.svc.routes]
"GET /echo/paid" = {{ price = "0.01", pay_with = ["play"] }}
"GET /sleep" = {{ price = "0.01", pay_with = ["play"] }}
"GET /reset-mid-body" = {{ price = "0.01", pay_with = ["play"] }}
"""


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


def write_config(tmp_path: Path, upstream: Upstream) -> str:
    path = tmp_path / "proxy.toml"
    state = tmp_path / "state.db"
    path.write_text(CONFIG.format(secret="r" * 40, state=str(state), upstream=upstream.url))
    return str(path)


def status_on_fresh_connection(url: str, credential: str) -> int:
    # A new client per call: a new connection, which any worker may accept.
    with httpx.Client() as client:
        return client.get(url, headers={"Authorization": credential}).status_code


def test_a_credential_delivered_by_one_process_is_refused_by_another(
    serve: Callable[..., ProxyProcess], upstream: Upstream, tmp_path: Path
) -> None:
    path = write_config(tmp_path, upstream)
    servers = [serve("--config", path) for _ in range(2)]
    first, second = (f"{served.url}/svc/echo/paid" for served in servers)

    credential = asyncio.run(buy(first))
    assert status_on_fresh_connection(first, credential) == 200
    assert status_on_fresh_connection(second, credential) == 403
    assert status_on_fresh_connection(first, credential) == 403
    assert upstream.requests == 1


def test_serve_with_two_workers_never_accepts_a_credential_twice(
    serve: Callable[..., ProxyProcess], upstream: Upstream, tmp_path: Path
) -> None:
    path = write_config(tmp_path, upstream)
    served = serve("--config", path, "--workers", "2")
    url = f"{served.url}/svc/echo/paid"

    for _ in range(3):
        credential = asyncio.run(buy(url))
        statuses = [status_on_fresh_connection(url, credential) for _ in range(12)]
        assert statuses[0] == 200
        assert set(statuses[1:]) == {403}
    assert upstream.requests == 3


@pytest.fixture
def paid_url(serve: Callable[..., ProxyProcess], upstream: Upstream, tmp_path: Path) -> str:
    path = write_config(tmp_path, upstream)
    served = serve("--config", path)
    return f"{served.url}/svc/echo/paid"


def test_ledger_shows_what_pay_paid_for(paid_url: str, tmp_path: Path) -> None:
    for _ in range(2):
        assert run_cli("pay", paid_url).code == 0
    result = run_cli("ledger", "--config", str(tmp_path / "proxy.toml"))
    assert result.code == 0, result.err
    total = next(line for line in result.out.splitlines() if line.startswith("svc"))
    assert total.split() == ["svc", "GET", "/echo/paid", "play", "TEST", "2", "20000", "0.020000"]
    payments = result.out.partition("latest payments")[2]
    assert payments.count(" delivered ") == 2


def test_pay_pays_with_test_money_and_shows_the_receipt(paid_url: str) -> None:
    result = run_cli("pay", paid_url)
    assert result.code == 0, result.err
    assert "< 402 Payment Required" in result.err
    assert re.search(r"price +0.01 TEST", result.err)
    assert "paying 0.01 TEST with test" in result.err
    assert "< 200 OK" in result.err
    assert "receipt (decoded):" in result.err
    assert "reference  test_" in result.err
    assert json.loads(result.out)["path"] == "/echo/paid"


def test_pay_refuses_a_price_above_max_amount(paid_url: str, upstream: Upstream) -> None:
    result = run_cli("pay", "--max-amount", "0.005", paid_url)
    assert result.code == 1
    last = result.err.strip().splitlines()[-1]
    assert last.startswith("mpp-proxy: refusing to pay 0.01 TEST: above --max-amount 0.005")
    assert "raise --max-amount to at least 0.01" in last
    assert upstream.requests == 0


def test_pay_says_how_to_enable_a_method_it_cannot_use(paid_url: str) -> None:
    result = run_cli("pay", "--method", "tempo", paid_url)
    assert result.code == 1
    assert "does not offer --method tempo: it offers test (0.01 TEST)" in result.err


def test_pay_hands_back_the_credential_when_the_paid_call_times_out(paid_url: str) -> None:
    slow = paid_url.replace("/svc/echo/paid", "/svc/sleep?s=3")
    result = run_cli("pay", "--timeout", "1", slow)
    assert result.code == 1
    assert "paying 0.01 TEST" in result.err
    assert re.search(r"^credential sent: Payment [A-Za-z0-9_-]+$", result.err, re.MULTILINE)
    last = result.err.strip().splitlines()[-1]
    assert "did not answer within 1s after paying" in last
    assert "retry the same request with -H 'Authorization:" in last


def test_pay_hands_back_the_credential_when_the_paid_call_dies_mid_body(paid_url: str) -> None:
    # The head was sent, so the payment settled; the connection then drops (not a timeout).
    dying = paid_url.replace("/svc/echo/paid", "/svc/reset-mid-body")
    result = run_cli("pay", dying)
    assert result.code == 1
    assert re.search(r"^credential sent: Payment [A-Za-z0-9_-]+$", result.err, re.MULTILINE)
    last = result.err.strip().splitlines()[-1]
    assert "after paying" in last and "retry the same request with -H 'Authorization:" in last


def test_pay_with_a_supplied_credential_never_pays_again(paid_url: str) -> None:
    stale = asyncio.run(buy(paid_url))
    assert status_on_fresh_connection(paid_url, stale) == 200
    result = run_cli("pay", "-H", f"Authorization: {stale}", paid_url)
    assert result.code == 1
    assert "paying" not in result.err
    assert "< 403 Forbidden" in result.err
