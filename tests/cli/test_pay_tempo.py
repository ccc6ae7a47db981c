"""`mpp-proxy pay` with Tempo: a real payment on a local chain (anvil) through a served proxy."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_harness import run_cli

from tests.support.anvil import DEV_ACCOUNTS, PATH_USD, Anvil
from tests.support.ports import free_port
from tests.support.proxy_process import ProxyProcess
from tests.support.upstream import Upstream

RECIPIENT = DEV_ACCOUNTS[-1]
PRICE_BASE = 25_000  # 0.025 pathUSD

CONFIG = """
[proxy]
secret_key = "{secret}"
state = "sqlite:///state.db"

[methods.usd]
kind = "tempo"
recipient = "{recipient}"
currency = "{currency}"
chain_id = 31337
rpc_url = "{rpc_url}"

[services.api]
base_url = "{upstream}"

[services.api.routes]
"GET /echo/report" = {{ price = "0.025", pay_with = ["usd"], description = "A report" }}
"""


@pytest.fixture(scope="module")
def chain() -> Iterator[Anvil]:
    with Anvil() as node:
        yield node


@pytest.fixture
def paid_url(serve: Callable[..., ProxyProcess], chain: Anvil, tmp_path: Path) -> Iterator[str]:
    with Upstream() as upstream:
        path = tmp_path / "proxy.toml"
        path.write_text(
            CONFIG.format(
                secret="t" * 40,
                recipient=RECIPIENT,
                currency=PATH_USD,
                rpc_url=chain.rpc_url,  # the relay: pympp's pull-mode broadcast needs it
                upstream=upstream.url,
            )
        )
        served = serve("--config", str(path))
        yield f"{served.url}/api/echo/report"


def test_pay_settles_on_chain_and_prints_the_receipt(chain: Anvil, paid_url: str) -> None:
    payer = chain.new_account()
    before = chain.balance(RECIPIENT)
    result = run_cli(
        "pay", "--method", "tempo", "--max-amount", "0.03", "--rpc-url", chain.url, paid_url,
        env={"MPP_PRIVATE_KEY": payer.private_key},
    )  # fmt: skip
    assert result.code == 0, result.err
    assert re.search(r"price +0\.025 pathUSD", result.err)
    assert "< 200 OK" in result.err
    reference = re.search(r"reference +(0x[0-9a-f]{64})", result.err)
    assert reference, result.err
    tx = chain.receipt(reference.group(1))
    assert tx is not None and tx["status"] == "0x1"
    assert chain.balance(RECIPIENT) - before == PRICE_BASE
    assert payer.private_key[2:] not in result.out + result.err


def test_pay_refuses_tempo_above_the_cap_before_signing(chain: Anvil, paid_url: str) -> None:
    payer = chain.new_account()
    before = chain.balance(payer.address)
    result = run_cli(
        "pay", "--max-amount", "0.02", "--rpc-url", chain.url, paid_url,
        env={"MPP_PRIVATE_KEY": payer.private_key},
    )  # fmt: skip
    assert result.code == 1
    assert "refusing to pay 0.025 pathUSD: above --max-amount 0.02" in result.err
    assert chain.balance(payer.address) == before


def test_pay_tempo_without_a_key_names_the_missing_key(paid_url: str) -> None:
    # The proxy offers tempo only: without a key `pay` must not claim it offers nothing.
    result = run_cli("pay", "--method", "tempo", paid_url)
    assert result.code == 1
    assert "--method tempo needs $MPP_PRIVATE_KEY" in result.err
    assert "does not offer" not in result.err
    assert "offers tempo (0.025 pathUSD)" in result.err


def test_pay_without_a_key_names_what_the_server_offers(paid_url: str) -> None:
    result = run_cli("pay", paid_url)
    assert result.code == 1
    assert "no offer this client can pay: the server offers tempo (0.025 pathUSD)" in result.err
    assert "set $MPP_PRIVATE_KEY" in result.err


def test_pay_with_the_rpc_down_names_the_rpc_host_not_the_proxy(
    chain: Anvil, paid_url: str
) -> None:
    payer = chain.new_account()
    dead = f"http://127.0.0.1:{free_port()}/v1/secret-api-key-in-path"
    result = run_cli("pay", "--rpc-url", dead, paid_url, env={"MPP_PRIVATE_KEY": payer.private_key})
    assert result.code == 1
    line = result.err.strip().splitlines()[-1]
    assert "the tempo RPC at 127.0.0.1 is unreachable" in line, result.err
    assert "nothing was paid" in line
    assert "is the proxy running" not in result.err
    assert "secret-api-key-in-path" not in result.err
