"""The transports pay a real gateway: receipts exposed, guards refuse first, credits redeemed."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import httpx
import pytest
from client_gateway import Gateway, ledger

from mpp_proxy.client import (
    PAYMENT_EXTENSION,
    AsyncPaymentTransport,
    PaidCall,
    PaymentRefused,
    PaymentTransport,
    test_money,
)


def keys(gateway: Gateway) -> set[str]:
    return {p.key for p in ledger(gateway.state)}


def test_sync_httpx_pays_a_402_and_exposes_the_receipt(gateway: Gateway) -> None:
    seen: list[PaidCall] = []
    transport = PaymentTransport([test_money()], max_amount="0.05", on_payment=seen.append)
    with httpx.Client(transport=transport, base_url=gateway.url) as client:
        response = client.get("/api/echo/cheap")
    assert response.status_code == 200
    assert response.json()["path"] == "/echo/cheap"
    paid = response.extensions[PAYMENT_EXTENSION]
    assert paid.receipt is not None and paid.receipt.reference.startswith("test_")
    assert (paid.price, paid.payment_method, paid.status) == ("0.01 TEST", "test", 200)
    assert transport.payments == seen == [paid]
    assert transport.guard.spent == Decimal("0.01")
    row = next(p for p in ledger(gateway.state) if p.reference == paid.receipt.reference)
    assert row.status == "delivered"


def test_async_httpx_pays_a_402_and_exposes_the_receipt(gateway: Gateway) -> None:
    async def go() -> httpx.Response:
        transport = AsyncPaymentTransport([test_money()], max_amount="0.05")
        async with httpx.AsyncClient(transport=transport, base_url=gateway.url) as client:
            response = await client.post("/api/echo/cheap", json={"q": 1})
        assert len(transport.payments) == 1
        return response

    response = asyncio.run(go())
    assert response.status_code == 200
    assert response.json()["body"] == '{"q":1}'  # the paid retry sent the same body
    assert response.extensions[PAYMENT_EXTENSION].receipt is not None


def test_a_call_above_max_amount_is_refused_before_paying(gateway: Gateway) -> None:
    before_rows, before_upstream = keys(gateway), gateway.echo.requests
    transport = PaymentTransport([test_money()], max_amount="0.10")
    with (
        httpx.Client(transport=transport, base_url=gateway.url) as client,
        pytest.raises(PaymentRefused) as refused,
    ):
        client.get("/api/echo/dear")
    assert refused.value.reason == "max_amount"
    assert str(refused.value) == "refusing to pay 0.5 TEST: above max_amount 0.10"
    assert transport.payments == [] and transport.guard.spent == 0
    assert keys(gateway) == before_rows  # nothing reached the ledger
    assert gateway.echo.requests == before_upstream  # nor the upstream


def test_the_budget_stops_paying_once_spent(gateway: Gateway) -> None:
    transport = PaymentTransport([test_money()], max_amount="0.05", budget="0.02")
    with httpx.Client(transport=transport, base_url=gateway.url) as client:
        assert client.get("/api/echo/cheap").status_code == 200
        assert client.get("/api/echo/cheap").status_code == 200
        with pytest.raises(PaymentRefused) as refused:
            client.get("/api/echo/cheap")
    assert refused.value.reason == "budget"
    assert len(transport.payments) == 2 and transport.guard.spent == Decimal("0.02")


def test_a_host_not_allowed_is_never_paid(gateway: Gateway) -> None:
    transport = PaymentTransport([test_money()], max_amount="1", allow_hosts=["api.example.com"])
    with (
        httpx.Client(transport=transport, base_url=gateway.url) as client,
        pytest.raises(PaymentRefused) as refused,
    ):
        client.get("/api/echo/cheap")
    assert refused.value.reason == "host"
    assert transport.payments == []


def test_free_calls_and_foreign_402s_pass_through_untouched(gateway: Gateway) -> None:
    transport = PaymentTransport([test_money()], max_amount="1")
    with httpx.Client(transport=transport, base_url=gateway.url) as client:
        free = client.get("/api/echo/free")
        assert free.status_code == 200 and PAYMENT_EXTENSION not in free.extensions
        assert free.json()["headers"]  # forwarded: the client's Accept-Payment was stripped
        assert "accept-payment" not in {k for k, _ in free.json()["headers"]}
    # A 402 without Payment challenges is not ours to pay.
    with httpx.Client(transport=transport) as client:
        foreign = client.get(f"{gateway.echo.url}/status/402")
    assert foreign.status_code == 402
    assert transport.payments == []


def test_a_failed_upstream_before_settlement_keeps_the_credential_for_the_retry(
    gateway: Gateway,
) -> None:
    # Settled after success: the upstream's 503 means nothing was charged and the credential
    # stays valid. The same request again presents it: one credential, two attempts.
    transport = PaymentTransport([test_money()], max_amount="0.05", budget="0.01")
    with httpx.Client(transport=transport, base_url=gateway.url) as client:
        first = client.get("/api/status/503")
        assert first.status_code == 503
        assert first.json()["type"].endswith("/payment-not-charged")
        again = client.get("/api/status/503")
        assert again.status_code == 503
    calls = transport.payments
    assert [c.redeemed for c in calls] == [False, True]
    assert calls[0].credential == calls[1].credential
    assert transport.guard.spent == Decimal("0.01")  # a second credential was never paid
    row = next(p for p in ledger(gateway.state) if p.scope == "GET /api/status/503")
    assert (row.status, row.attempts) == ("released", 2)


def test_a_failed_upstream_keeps_the_credential_and_the_retry_redeems_it(
    credit_gateway: Gateway,
) -> None:
    # The paid call's upstream answers 503: the gateway keeps the payment as a credit. The same
    # request again (an SDK's retry) presents the kept credential: one payment, two attempts.
    gateway = credit_gateway
    transport = PaymentTransport([test_money()], max_amount="0.05", budget="0.01")
    with httpx.Client(transport=transport, base_url=gateway.url) as client:
        first = client.get("/api/status/503")
        assert first.status_code == 503
        problem = first.json()
        assert problem["type"].endswith("/payment-credited")
        again = client.get("/api/status/503")  # the upstream still fails: credited again
        assert again.status_code == 503
    calls = transport.payments
    assert [c.redeemed for c in calls] == [False, True]
    assert calls[0].credential == calls[1].credential
    assert calls[1].amount == 0 and transport.guard.spent == Decimal("0.01")
    row = next(p for p in ledger(gateway.state) if p.reference == problem["credit"]["reference"])
    assert (row.status, row.attempts) == ("credited", 2)


def test_the_sync_transport_works_inside_a_running_event_loop(gateway: Gateway) -> None:
    async def inside_a_loop() -> int:
        transport = PaymentTransport([test_money()], max_amount="0.05")
        with httpx.Client(transport=transport, base_url=gateway.url) as client:
            return client.get("/api/echo/cheap").status_code

    assert asyncio.run(inside_a_loop()) == 200


def test_a_supplied_credential_is_sent_as_it_is(gateway: Gateway) -> None:
    transport = PaymentTransport([test_money()], max_amount="0.05")
    with httpx.Client(transport=transport, base_url=gateway.url) as client:
        paid = client.get("/api/echo/cheap").extensions[PAYMENT_EXTENSION]
        replay = client.get("/api/echo/cheap", headers={"Authorization": paid.credential})
    assert replay.status_code == 403  # the gateway refuses the replay; nothing paid anew
    assert len(transport.payments) == 1


def test_a_transport_needs_a_method_and_a_cap() -> None:
    with pytest.raises(ValueError, match="at least one payment method"):
        PaymentTransport([], max_amount="1")
    with pytest.raises(TypeError, match="max_amount is required"):
        PaymentTransport([test_money()])


def test_a_paid_stream_closed_early_is_read_to_its_end_and_recorded_delivered(
    gateway: Gateway,
) -> None:
    # Like the sync OpenAI SDK at `data: [DONE]`: stop reading and close before the stream ends.
    transport = PaymentTransport([test_money()], max_amount="0.05")
    with (
        httpx.Client(transport=transport, base_url=gateway.url) as client,
        client.stream("GET", "/api/sse", params={"n": "4", "interval": "0.05"}) as response,
    ):
        assert response.status_code == 200
        assert next(response.iter_raw()).startswith(b"data: 0")  # the first event only
    paid = transport.payments[0]
    assert paid.receipt is not None
    assert final_status(gateway, paid.receipt.reference) == "delivered"


def final_status(gateway: Gateway, reference: str) -> str:
    """The row's status once the gateway has accounted for the exchange (not in flight)."""
    deadline = time.monotonic() + 10
    while True:
        row = next(p for p in ledger(gateway.state) if p.reference == reference)
        if row.status != "in_flight" or time.monotonic() > deadline:
            return str(row.status)
        time.sleep(0.05)


def test_an_async_paid_stream_closed_early_is_recorded_delivered_too(gateway: Gateway) -> None:
    async def go() -> str:
        transport = AsyncPaymentTransport([test_money()], max_amount="0.05")
        async with (
            httpx.AsyncClient(transport=transport, base_url=gateway.url) as client,
            client.stream("GET", "/api/sse", params={"n": "4", "interval": "0.05"}) as response,
        ):
            async for chunk in response.aiter_raw():
                assert chunk.startswith(b"data: 0")
                break
        receipt = transport.payments[0].receipt
        assert receipt is not None
        return receipt.reference

    assert final_status(gateway, asyncio.run(go())) == "delivered"
