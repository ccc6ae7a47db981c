"""A Tempo payment on a local anvil chain through the proxy served by granian."""

from __future__ import annotations

import httpx
from mpp.client import PaymentTransport

from tests.e2e.harness import (
    PRICE_BASE,
    TEMPO_RECIPIENT,
    ledger,
    receipt,
    run,
)
from tests.e2e.parties import Served, Wallet
from tests.support.anvil import PATH_USD, Anvil
from tests.support.upstream import Upstream


async def _paid_get(url: str, wallet: Wallet, kind: str) -> httpx.Response:
    transport = PaymentTransport(methods=[wallet.method(kind)], inner=httpx.AsyncHTTPTransport())
    async with httpx.AsyncClient(transport=transport, timeout=60) as client:
        response = await client.get(url)
        await response.aread()
        return response


def test_pympp_client_pays_tempo_on_anvil_and_gets_the_upstream_answer_with_a_receipt(
    proxy: Served, chain: Anvil, echo: Upstream, wallet: Wallet
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
    proxy: Served, chain: Anvil, wallet: Wallet
) -> None:
    before = chain.balance(TEMPO_RECIPIENT)
    first = run(_paid_get(proxy.url + "/api/echo/tempo/a", wallet, "tempo"))
    second = run(_paid_get(proxy.url + "/api/echo/tempo/a", wallet, "tempo"))
    assert (first.status_code, second.status_code) == (200, 200)
    assert receipt(first)["reference"] != receipt(second)["reference"]
    assert chain.balance(TEMPO_RECIPIENT) - before == 2 * PRICE_BASE
    assert len(set(wallet.tempo.payers)) == 2
