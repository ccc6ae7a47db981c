"""A Tempo payment on a local anvil chain through the proxy served by granian."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from mpp import Challenge
from mpp.client.transport import PaymentTransport

from mpp_proxy.config import load_config
from tests.e2e.harness import (
    PRICE_BASE,
    SECRET,
    TEMPO_RECIPIENT,
    challenges,
    credential_doc,
    credential_value,
    ledger,
    proxy_toml,
    receipt,
    run,
    wait_for,
)
from tests.e2e.parties import Deployment, Wallet
from tests.support.anvil import PATH_USD, Anvil
from tests.support.proxy_process import ProxyProcess
from tests.support.upstream import Upstream


async def _paid_get(url: str, wallet: Wallet, kind: str) -> httpx.Response:
    transport = PaymentTransport(methods=[wallet.method(kind)], inner=httpx.AsyncHTTPTransport())
    async with httpx.AsyncClient(transport=transport, timeout=60) as client:
        response = await client.get(url)
        await response.aread()
        return response


def test_pympp_client_pays_tempo_on_anvil_and_gets_the_upstream_answer_with_a_receipt(
    proxy: Deployment, chain: Anvil, echo: Upstream, wallet: Wallet
) -> None:
    before = chain.balance(TEMPO_RECIPIENT)
    upstream_before = echo.requests

    response = run(_paid_get(proxy.url + "/api/echo/tempo/a?x=1", wallet, "tempo"))

    assert response.status_code == 200, response.text
    echoed = response.json()
    assert echoed["path"] == "/echo/tempo/a"
    assert echoed["query"] == "x=1"
    # The credential never reaches the upstream.
    assert not any(name.lower() == "authorization" for name, _ in echoed["headers"])
    assert response.headers["cache-control"] == "private"
    paid = receipt(response)
    assert paid["status"] == "success"
    assert paid["method"] == "tempo"
    tx = chain.receipt(paid["reference"])
    assert tx is not None and tx["status"] == "0x1", tx
    payer = wallet.tempo.payers[-1]
    assert (payer.lower(), TEMPO_RECIPIENT.lower(), PRICE_BASE) in chain.transfer_logs(
        paid["reference"]
    )
    assert chain.balance(TEMPO_RECIPIENT) - before == PRICE_BASE
    assert echo.requests - upstream_before == 1
    # The pull-mode broadcast went through the relay (pympp's two-parameter call rewritten).
    assert "eth_sendRawTransactionSync" in chain.relayed_calls

    rows = [p for p in ledger(proxy.state) if p.reference == paid["reference"]]
    assert len(rows) == 1
    row = rows[0]
    assert row.status == "delivered"
    assert (row.kind, row.method, row.amount, row.currency.lower()) == (
        "tempo",
        "usd",
        str(PRICE_BASE),
        PATH_USD,
    )
    assert (row.service, row.route, row.scope) == (
        "api",
        "GET /echo/tempo/a",
        "GET /api/echo/tempo/a?x=1",
    )
    assert payer.lower() in row.payer.lower()


def test_a_second_payment_settles_from_another_fresh_payer(
    proxy: Deployment, chain: Anvil, wallet: Wallet
) -> None:
    before = chain.balance(TEMPO_RECIPIENT)
    first = run(_paid_get(proxy.url + "/api/echo/tempo/a", wallet, "tempo"))
    second = run(_paid_get(proxy.url + "/api/echo/tempo/a", wallet, "tempo"))
    assert (first.status_code, second.status_code) == (200, 200)
    assert receipt(first)["reference"] != receipt(second)["reference"]
    assert chain.balance(TEMPO_RECIPIENT) - before == 2 * PRICE_BASE
    assert len(set(wallet.tempo.payers)) == 2


@dataclass
class TwoWorkers:
    server: ProxyProcess
    state: str


@pytest.fixture(scope="module")
def two_workers(
    tmp_path_factory: pytest.TempPathFactory, chain: Anvil, echo: Upstream
) -> Iterator[TwoWorkers]:
    """proxy.toml under `mpp-proxy serve --workers 2`: two processes share one SQLite ledger."""
    folder = tmp_path_factory.mktemp("workers")
    state = f"sqlite:///{folder / 'state.db'}"
    config = folder / "proxy.toml"
    config.write_text(proxy_toml(state=state, echo_url=echo.url, rpc_url=chain.rpc_url))
    serve = ProxyProcess.serve(
        "--config", str(config), "--workers", "2", folder=folder, env={"E2E_SECRET": SECRET}
    )
    with serve as server:
        yield TwoWorkers(server, state)


def test_proxy_toml_served_by_mpp_proxy_serve_with_two_workers_pays_once_and_refuses_replays(
    two_workers: TwoWorkers, chain: Anvil, echo: Upstream, wallet: Wallet
) -> None:
    server, state = two_workers.server, two_workers.state
    before = chain.balance(TEMPO_RECIPIENT)
    hits = echo.requests
    with httpx.Client(base_url=server.url, timeout=60) as client:
        assert client.get("/api/free").status_code == 404  # the upstream's own answer
        first = client.get("/api/echo/tempo/b")
        assert first.status_code == 402
        credential = wallet.pay("tempo", challenges(first))
        paid = client.get("/api/echo/tempo/b", headers={"authorization": credential})
        assert paid.status_code == 200, paid.text
        reference = receipt(paid)["reference"]
    assert (chain.receipt(reference) or {}).get("status") == "0x1"
    # Fresh connections land on either worker; the SQLite ledger refuses the replay on both.
    for _ in range(6):
        again = httpx.get(server.url + "/api/echo/tempo/b", headers={"authorization": credential})
        assert again.status_code in (403, 409), again.text
    assert wait_for(
        lambda: [p.status for p in ledger(state) if p.reference == reference] == ["delivered"]
    ), ledger(state)
    assert (
        httpx.get(
            server.url + "/api/echo/tempo/b", headers={"authorization": credential}
        ).status_code
        == 403
    )
    assert chain.balance(TEMPO_RECIPIENT) - before == PRICE_BASE
    assert echo.requests - hits == 2  # /free and one paid request


def test_twenty_concurrent_requests_with_one_credential_across_two_workers_reach_upstream_once(
    two_workers: TwoWorkers, chain: Anvil, echo: Upstream, wallet: Wallet
) -> None:
    url = two_workers.server.url + "/api/sleep?s=0.5"
    first = httpx.get(url)
    assert first.status_code == 402
    credential = wallet.pay("tempo", challenges(first))
    before, hits = chain.balance(TEMPO_RECIPIENT), echo.requests

    async def burst() -> list[httpx.Response]:
        # One connection per request, so either worker may take each of them.
        limits = httpx.Limits(max_connections=20, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=60, limits=limits) as c:
            return await asyncio.gather(
                *(c.get(url, headers={"authorization": credential}) for _ in range(20))
            )

    codes = sorted(r.status_code for r in asyncio.run(burst()))

    assert codes.count(200) == 1, codes
    assert set(codes) <= {200, 403, 409}, codes
    assert echo.requests - hits == 1
    assert chain.balance(TEMPO_RECIPIENT) - before == PRICE_BASE


def test_lease_seconds_is_configurable_in_proxy_toml(tmp_path: Path) -> None:
    config = tmp_path / "proxy.toml"
    text = proxy_toml(
        state="memory://", echo_url="http://127.0.0.1:9", rpc_url="http://127.0.0.1:9"
    )
    config.write_text(text.replace("[proxy]\n", "[proxy]\nlease_seconds = 2\n", 1))
    loaded = load_config(config, environ={"E2E_SECRET": SECRET})
    assert loaded.proxy.lease_seconds == 2.0


def _tempo_challenge(response: httpx.Response) -> Challenge:
    from mpp.client.transport import _payment_challenges

    for value in challenges(response):
        for text in _payment_challenges(value):
            found = Challenge.from_www_authenticate(text)
            if found.method == "tempo":
                return found
    raise AssertionError("no tempo challenge")


def test_push_mode_client_broadcasts_itself_and_presents_the_hash(
    proxy: Deployment, chain: Anvil, wallet: Wallet, echo: Upstream
) -> None:
    before = chain.balance(TEMPO_RECIPIENT)
    with httpx.Client(base_url=proxy.url, timeout=60) as client:
        first = client.get("/api/echo/tempo/a")
        assert first.status_code == 402
        credential = run(wallet.tempo.pay_push(_tempo_challenge(first)))
        # The money moved before the proxy saw anything.
        assert chain.balance(TEMPO_RECIPIENT) - before == PRICE_BASE
        tx_hash = credential_doc(credential)["payload"]["hash"]

        paid = client.get("/api/echo/tempo/a", headers={"authorization": credential})

        assert paid.status_code == 200, paid.text
        assert receipt(paid)["reference"].lower() == tx_hash.lower()
        # One transfer pays one challenge: the same hash for a new challenge is refused.
        second = client.get("/api/echo/tempo/a")
        doc = credential_doc(credential)
        fresh = credential_doc(wallet.pay("tempo", challenges(second)))
        doc["challenge"] = fresh["challenge"]
        hits = echo.requests
        reused = client.get("/api/echo/tempo/a", headers={"authorization": credential_value(doc)})
        assert reused.status_code in (402, 403), reused.text
        assert "payment-receipt" not in reused.headers
        assert echo.requests == hits
    assert chain.balance(TEMPO_RECIPIENT) - before == PRICE_BASE
