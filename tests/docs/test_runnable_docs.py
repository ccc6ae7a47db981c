"""Every README command block marked runnable works, run as a reader would run it."""

from __future__ import annotations

import asyncio
import re
import tomllib
from pathlib import Path

from readme_parts import README, REPO, code_blocks
from runnable import Run, run_scenario, runnable_blocks, scenarios

from mpp_proxy.state import PaymentStatus, open_store
from tests.support.anthropic_upstream import AnthropicUpstream
from tests.support.anvil import Anvil
from tests.support.openai_upstream import OpenAIUpstream

MODERATO_RPC = "https://rpc.moderato.tempo.xyz"
# One line of the gateway's JSON access log, as `mpp-proxy serve` writes it on stdout.
ACCESS_LINE = re.compile(r'\{"time":"[^\n]*\}\n')

# Scenarios with a test of their own below; any other scenario fails until it gets one.
COVERED = {"demo", "local", "moderato", "clients", "operating"}


def _ok(run: Run) -> None:
    assert run.code == 0, run.out[-6000:]


def _ledger(path: Path) -> list[tuple[str, str, str]]:
    async def read() -> list[tuple[str, str, str]]:
        store = open_store(f"sqlite:///{path}")
        await store.open()
        try:
            rows = await store.list_payments()
        finally:
            await store.close()
        return [(p.service, p.route, str(p.status)) for p in rows]

    return asyncio.run(read())


def test_every_runnable_scenario_has_a_test() -> None:
    assert set(scenarios()) == COVERED


def test_runnable_blocks_are_found_in_the_readme() -> None:
    blocks = runnable_blocks()
    assert {b.scenario for b in blocks} >= {"demo", "local"}
    assert any("mpp-proxy serve" in b.text for b in blocks)


def test_the_demo_walk_through_runs(tmp_path: Path) -> None:
    run = run_scenario("demo", tmp_path)
    _ok(run)
    assert "All 5 steps passed." in run.out


def test_quickstart_own_api_with_test_money(tmp_path: Path) -> None:
    run = run_scenario("local", tmp_path)
    _ok(run)
    assert "HTTP/1.1 402 Payment Required" in run.out
    assert "config OK" in run.out
    # The ledger the quickstart's state URL names, next to where the commands ran.
    rows = _ledger(tmp_path / "state" / "local-api.db")
    assert rows == [("weather", "GET /v1/forecast/:city", PaymentStatus.DELIVERED.value)]


def test_quickstart_on_tempo_testnet_pays_on_chain(tmp_path: Path) -> None:
    # anvil as Moderato: the same chain id, and its relay answers the faucet call.
    with Anvil(chain_id=42431) as chain:
        recipient = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"  # the README's example address
        before = chain.balance(recipient)
        run = run_scenario("moderato", tmp_path, replace={MODERATO_RPC: chain.rpc_url})
        _ok(run)
        assert chain.balance(recipient) - before == 1000  # 0.001 pathUSD, in base units
    assert "< 200 OK" in run.out
    rows = _ledger(tmp_path / "state" / "local-api-tempo.db")
    assert rows == [("weather", "GET /v1/forecast/:city", PaymentStatus.DELIVERED.value)]


def test_the_quickstart_shows_the_example_files_as_they_are() -> None:
    text = README.read_text(encoding="utf-8")
    quickstart = text.split("## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    tomls = [body for info, body, _ in code_blocks(quickstart) if info == "toml"]
    local = (REPO / "examples" / "local-api.toml").read_text(encoding="utf-8")
    tempo = (REPO / "examples" / "local-api-tempo.toml").read_text(encoding="utf-8")
    assert tomls[0] == local
    assert tomls[1] in tempo


def test_the_tempo_example_differs_from_the_local_one_only_in_how_it_is_paid() -> None:
    local = tomllib.loads((REPO / "examples" / "local-api.toml").read_text(encoding="utf-8"))
    tempo = tomllib.loads((REPO / "examples" / "local-api-tempo.toml").read_text(encoding="utf-8"))
    assert local["services"] == tempo["services"]
    assert local["methods"]["test"] == {"kind": "test"}
    assert tempo["methods"]["usd"]["chain_id"] == 42431
    assert local["proxy"].pop("allow_test_payments") is True
    assert "allow_test_payments" not in tempo["proxy"]
    assert local["proxy"].pop("state") != tempo["proxy"].pop("state")
    assert local["proxy"] == tempo["proxy"]


def test_client_examples_pay_the_example_gateway_with_test_money(tmp_path: Path) -> None:
    with OpenAIUpstream() as openai, AnthropicUpstream() as anthropic:
        env = {"OPENAI_BASE_URL": openai.url, "ANTHROPIC_BASE_URL": anthropic.url}
        run = run_scenario("clients", tmp_path, env=env)
        _ok(run)
        # Each SDK call reached its upstream once, with the gateway's key, not the client's.
        assert openai.completions == 3 and anthropic.completions == 2
        assert {h["authorization"] for h, _ in openai.seen} == {"Bearer sk-..."}
        assert {h["x-api-key"] for h, _ in anthropic.seen} == {"sk-ant-..."}
    # The gateway's access-log lines share the output pipe with the clients, and the streaming
    # clients write chunk by chunk: a batch of log lines may land inside a streamed line.
    out = ACCESS_LINE.sub("", run.out)
    assert out.count("paid 0.01 TEST with test: test_") == 5
    assert "paid 0.001 TEST with test: test_" in out
    assert out.count("echo: Say hello in five words.") == 5
    rows = _ledger(tmp_path / "state" / "clients.db")
    assert len(rows) == 6 and {r[2] for r in rows} == {PaymentStatus.DELIVERED.value}


def test_operating_ledger_credits_and_admin_commands_run(tmp_path: Path) -> None:
    run = run_scenario("operating", tmp_path)
    _ok(run)
    assert "voided credit" in run.out and "no such city" in run.out
    assert run.out.rstrip().splitlines()[-1] != "200"
    assert "\n404\n" in run.out  # /admin/config without the token
    payments = (tmp_path / "payments.csv").read_text(encoding="utf-8").splitlines()
    assert payments[0].startswith("created_at_iso,status,service")
    assert len(payments) == 3  # the header, the delivered payment, the credit
    rows = {r[2] for r in _ledger(tmp_path / "state" / "local-api.db")}
    assert rows == {PaymentStatus.DELIVERED.value, PaymentStatus.VOIDED.value}
