"""Nothing lost, nothing twice: credits after upstream failures, one request in flight, kill -9."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path

import httpx
import pytest
from mpp.client.transport import PaymentTransport

from mpp_proxy.state.base import Payment
from tests.e2e.harness import (
    METHODS,
    PRICE_BASE,
    TEMPO_RECIPIENT,
    challenges,
    ledger,
    problem,
    receipt,
    slug,
    wait_for,
)
from tests.e2e.parties import Deployment, Wallet, serve_py
from tests.support.anvil import Anvil
from tests.support.fake_stripe import FakeStripe
from tests.support.openai_upstream import OpenAIUpstream, reply_text
from tests.support.upstream import Upstream

CHAT = "/openai/v1/chat/completions"


def _rows_for(state: str, reference: str) -> list[Payment]:
    return [p for p in ledger(state) if p.reference == reference]


def _settled_row(state: str, reference: str) -> Payment:
    """The one ledger row of `reference` once it left in_flight.

    The ledger records delivery after the last body byte went out, so a client that read the
    whole response may look a moment before that write lands.
    """
    assert wait_for(
        lambda: [p.status for p in _rows_for(state, reference)] not in ([], ["in_flight"]),
        timeout=10,
    ), _rows_for(state, reference)
    [row] = _rows_for(state, reference)
    return row


@pytest.mark.parametrize("kind", METHODS)
def test_upstream_500_after_payment_becomes_a_credit_and_the_retry_delivers_once(
    kind: str,
    proxy: Deployment,
    client: httpx.Client,
    wallet: Wallet,
    openai_upstream: OpenAIUpstream,
    chain: Anvil,
) -> None:
    body = {"model": "gpt-test-mini", "messages": [{"role": "user", "content": f"hi {kind}"}]}
    first = client.post(CHAT, json=body)
    assert first.status_code == 402
    credential = wallet.pay(kind, challenges(first))
    balance = chain.balance(TEMPO_RECIPIENT)
    calls = openai_upstream.completions
    openai_upstream.fail_next(1, 500)

    failed = client.post(CHAT, json=body, headers={"authorization": credential})

    assert failed.status_code == 500, failed.text
    assert "payment-receipt" not in failed.headers
    doc = problem(failed)
    assert slug(failed) == "payment-credited"
    assert doc["upstreamStatus"] == 500
    assert "same credential" in doc["detail"]
    reference = doc["credit"]["reference"]
    row = _settled_row(proxy.state, reference)
    assert row.status == "credited" and row.kind == kind

    retried = client.post(CHAT, json=body, headers={"authorization": credential})

    assert retried.status_code == 200, retried.text
    assert retried.json()["choices"][0]["message"]["content"] == reply_text(f"hi {kind}")
    assert receipt(retried)["reference"] == reference
    assert openai_upstream.completions - calls == 2
    row = _settled_row(proxy.state, reference)
    assert (row.status, row.attempts) == ("delivered", 2)
    if kind == "tempo":
        # Paid once: the retry did not move money again.
        assert chain.balance(TEMPO_RECIPIENT) - balance == PRICE_BASE
    # Delivered means used up.
    again = client.post(CHAT, json=body, headers={"authorization": credential})
    assert again.status_code == 403
    assert openai_upstream.completions - calls == 2


@pytest.mark.parametrize("kind", METHODS)
def test_twenty_concurrent_requests_with_one_credential_reach_the_upstream_once(
    kind: str, proxy: Deployment, client: httpx.Client, wallet: Wallet, echo: Upstream
) -> None:
    path = "/api/sleep?s=0.5"
    first = client.get(path)
    assert first.status_code == 402
    credential = wallet.pay(kind, challenges(first))
    hits = echo.requests

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=20)
        async with httpx.AsyncClient(base_url=proxy.url, timeout=60, limits=limits) as c:
            return await asyncio.gather(
                *(c.get(path, headers={"authorization": credential}) for _ in range(20))
            )

    responses = asyncio.run(burst())

    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) == 1, codes
    assert set(codes) <= {200, 403, 409}, codes
    assert echo.requests - hits == 1
    ok = next(r for r in responses if r.status_code == 200)
    assert "payment-receipt" in ok.headers
    for r in responses:
        if r.status_code != 200:
            assert "payment-receipt" not in r.headers
            assert slug(r) in {"payment-in-progress", "credential-used"}
    row = _settled_row(proxy.state, receipt(ok)["reference"])
    assert (row.status, row.attempts) == ("delivered", 1)


def test_kill_9_while_the_upstream_holds_a_paid_request_leaves_a_credit_the_retry_delivers(
    tmp_path: Path,
    chain: Anvil,
    echo: Upstream,
    openai_upstream: OpenAIUpstream,
    stripe_api: FakeStripe,
    wallet: Wallet,
) -> None:
    served = serve_py(
        tmp_path / "crash",
        chain=chain,
        echo=echo,
        openai_upstream=openai_upstream,
        stripe_url=stripe_api.url,
        lease_seconds=1.0,
        settle="before",
    )
    try:
        path = "/api/sleep?s=3"
        with httpx.Client(base_url=served.url, timeout=60) as client:
            first = client.get(path)
            assert first.status_code == 402
            credential = wallet.pay("tempo", challenges(first))
        balance = chain.balance(TEMPO_RECIPIENT)
        hits = echo.requests
        outcome: list[object] = []

        def held_request() -> None:
            try:
                outcome.append(
                    httpx.get(served.url + path, headers={"authorization": credential}, timeout=30)
                )
            except httpx.HTTPError as exc:
                outcome.append(exc)

        thread = threading.Thread(target=held_request)
        thread.start()
        assert wait_for(lambda: echo.requests > hits, timeout=30), "the paid request never arrived"
        [row] = ledger(served.state)
        assert (row.status, row.kind) == ("in_flight", "tempo")
        assert row.reference, "settled before forwarding"

        served.process.kill9()
        thread.join(30)
        assert outcome and isinstance(outcome[0], httpx.HTTPError), outcome
        assert chain.balance(TEMPO_RECIPIENT) - balance == PRICE_BASE
        # Let the dead process's lease run out, then start again on the same state file.
        time.sleep(1.2)
        served.process.start()

        # The start-up sweep turns the abandoned claim into a credit before anyone asks.
        [row] = ledger(served.state)
        assert row.status == "credited", row
        reference = row.reference

        retried = httpx.get(served.url + path, headers={"authorization": credential}, timeout=30)

        assert retried.status_code == 200, retried.text
        assert receipt(retried)["reference"] == reference
        row = _settled_row(served.state, reference)
        assert (row.status, row.attempts) == ("delivered", 2)
        assert chain.balance(TEMPO_RECIPIENT) - balance == PRICE_BASE
        assert echo.requests - hits == 2
    finally:
        served.process.stop()


def test_kill_9_while_the_payment_is_being_broadcast_is_not_lost(
    tmp_path: Path,
    chain: Anvil,
    echo: Upstream,
    openai_upstream: OpenAIUpstream,
    stripe_api: FakeStripe,
    wallet: Wallet,
) -> None:
    """The node got the transaction, the proxy died before recording it: retry must deliver."""
    served = serve_py(
        tmp_path / "crash-settling",
        chain=chain,
        echo=echo,
        openai_upstream=openai_upstream,
        stripe_url=stripe_api.url,
        lease_seconds=1.0,
        settle="before",
    )
    try:
        path = "/api/echo/tempo/a"
        with httpx.Client(base_url=served.url, timeout=60) as client:
            first = client.get(path)
            assert first.status_code == 402
            credential = wallet.pay("tempo", challenges(first))
        balance = chain.balance(TEMPO_RECIPIENT)
        hits = echo.requests
        arrived = chain.hold_broadcasts(1.5)

        def paid_request() -> None:
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(served.url + path, headers={"authorization": credential}, timeout=30)

        thread = threading.Thread(target=paid_request)
        thread.start()
        assert arrived.wait(30), "the proxy never broadcast the payment"
        [row] = ledger(served.state)
        assert (row.status, row.reference) == ("in_flight", "")
        served.process.kill9()
        thread.join(30)
        # The transaction lands although nobody is left to record it.
        assert wait_for(lambda: chain.balance(TEMPO_RECIPIENT) - balance == PRICE_BASE, 15)
        chain.hold_broadcasts(0)
        time.sleep(1.2)
        served.process.start()
        [row] = ledger(served.state)
        assert row.status == "credited", row

        retried = httpx.get(served.url + path, headers={"authorization": credential}, timeout=30)

        assert retried.status_code == 200, (retried.text, ledger(served.state))
        reference = receipt(retried)["reference"]
        assert (chain.receipt(reference) or {}).get("status") == "0x1"
        row = _settled_row(served.state, reference)
        assert row.status == "delivered"
        assert chain.balance(TEMPO_RECIPIENT) - balance == PRICE_BASE
        assert echo.requests - hits == 1
    finally:
        chain.hold_broadcasts(0)
        served.process.stop()


def test_a_credit_not_claimed_within_credit_ttl_is_forfeited(
    short_proxy: Deployment, wallet: Wallet, openai_upstream: OpenAIUpstream
) -> None:
    body = {"model": "gpt-test-mini", "messages": [{"role": "user", "content": "late"}]}
    with httpx.Client(base_url=short_proxy.url, timeout=60) as client:
        first = client.post(CHAT, json=body)
        # EVM: a two-second challenge is too short for Tempo, whose node wants a transaction
        # valid for 3 s more and pympp's client caps that at the challenge's expiry.
        credential = wallet.pay("evm", challenges(first))
        openai_upstream.fail_next(1, 503)
        failed = client.post(CHAT, json=body, headers={"authorization": credential})
        assert failed.status_code == 503, failed.text
        reference = problem(failed)["credit"]["reference"]
        assert _settled_row(short_proxy.state, reference).status == "credited"
        calls = openai_upstream.completions
        time.sleep(2.5)

        late = client.post(CHAT, json=body, headers={"authorization": credential})

        assert late.status_code == 403, late.text
        assert slug(late) == "credit-forfeited"
        assert openai_upstream.completions == calls
        [row] = _rows_for(short_proxy.state, reference)
        assert row.status == "forfeited"


def test_a_client_that_hangs_up_mid_request_keeps_a_credit_it_can_redeem(
    proxy: Deployment, client: httpx.Client, wallet: Wallet, echo: Upstream, chain: Anvil
) -> None:
    path = "/api/sleep?s=2"
    first = client.get(path)
    credential = wallet.pay("tempo", challenges(first))
    balance, hits = chain.balance(TEMPO_RECIPIENT), echo.requests

    with pytest.raises(httpx.ReadTimeout):
        httpx.get(proxy.url + path, headers={"authorization": credential}, timeout=1.2)

    def credited() -> bool:
        return any(p.scope == "GET " + path and p.status == "credited" for p in ledger(proxy.state))

    # The proxy notices the hang-up, cancels the upstream exchange and keeps the payment.
    assert wait_for(credited, timeout=10), ledger(proxy.state)[:3]
    retried = client.get(path, headers={"authorization": credential})
    assert retried.status_code == 200, retried.text
    row = _settled_row(proxy.state, receipt(retried)["reference"])
    assert (row.status, row.attempts) == ("delivered", 2)
    assert chain.balance(TEMPO_RECIPIENT) - balance == PRICE_BASE
    assert echo.requests - hits == 2


def test_concurrent_payments_from_different_payers_all_settle(
    proxy: Deployment, wallet: Wallet, chain: Anvil, echo: Upstream
) -> None:
    before, hits = chain.balance(TEMPO_RECIPIENT), echo.requests

    async def many() -> list[httpx.Response]:
        transport = PaymentTransport(
            methods=[wallet.method("tempo")], inner=httpx.AsyncHTTPTransport()
        )
        async with httpx.AsyncClient(transport=transport, timeout=60) as c:
            return await asyncio.gather(
                *(c.get(proxy.url + f"/api/echo/tempo/a?n={i}") for i in range(6))
            )

    responses = asyncio.run(many())

    assert [r.status_code for r in responses] == [200] * 6, [r.text for r in responses]
    references = {receipt(r)["reference"] for r in responses}
    assert len(references) == 6
    assert chain.balance(TEMPO_RECIPIENT) - before == 6 * PRICE_BASE
    assert echo.requests - hits == 6
