"""The official OpenAI and Anthropic SDKs, sync and async, streaming too, pay through the gateway
with mpp_proxy.client: with test money, and with Tempo on a local chain."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import httpx2
import pytest
from anthropic import Anthropic, APIConnectionError, AsyncAnthropic
from client_gateway import ANTHROPIC_KEY, OPENAI_KEY, RECIPIENT, Gateway, ledger
from mpp.runtime import ClientMethod
from openai import AsyncOpenAI, OpenAI

from mpp_proxy.client import PaidCall, PaymentRefused, test_money
from mpp_proxy.client.httpx2 import AsyncPaymentTransport, PaymentTransport
from tests.support.anthropic_upstream import CLAUDE
from tests.support.anvil import Anvil
from tests.support.openai_upstream import MODEL, reply_text

PRICE_BASE = 10_000  # 0.01 pathUSD


@dataclass
class Money:
    """One way to pay: a gateway taking it, the client method, and how to check a payment."""

    gateway: Gateway
    method: Callable[[], ClientMethod]
    settled: Callable[[PaidCall], bool]


@pytest.fixture(params=["test money", "tempo"])
def money(request: pytest.FixtureRequest) -> Money:
    if request.param == "test money":
        gateway = request.getfixturevalue("gateway")
        return Money(gateway, test_money, lambda p: p.receipt is not None)
    gateway = request.getfixturevalue("tempo_gateway")
    chain: Anvil = request.getfixturevalue("chain")

    def on_chain(paid: PaidCall) -> bool:
        # anvil mines one payment per payer: each call pays from a fresh funded account.
        tx = chain.receipt(paid.receipt.reference) if paid.receipt else None
        return tx is not None and tx["status"] == "0x1"

    return Money(gateway, lambda: chain.payer().method, on_chain)


def check(money: Money, transport: PaymentTransport | AsyncPaymentTransport, calls: int) -> None:
    paid = transport.payments
    assert len(paid) == calls and all(p.status == 200 for p in paid)
    assert all(money.settled(p) for p in paid)
    references = {p.receipt.reference for p in paid if p.receipt}
    rows = [r for r in ledger(money.gateway.state) if r.reference in references]
    assert sorted(str(r.status) for r in rows) == ["delivered"] * calls


def test_openai_sync_chat_and_stream(money: Money) -> None:
    transport = PaymentTransport([money.method()], max_amount="0.05")
    client = OpenAI(
        base_url=f"{money.gateway.url}/openai/v1",
        api_key="client-side-key",
        http_client=httpx2.Client(transport=transport),
        max_retries=0,
    )
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "sync chat"}]
    )
    assert chat.choices[0].message.content == reply_text("sync chat")
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "sync stream of words"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == reply_text("sync stream of words")
    check(money, transport, 2)
    headers, _ = money.gateway.openai.seen[-1]
    assert headers["authorization"] == f"Bearer {OPENAI_KEY}"  # the operator's, not ours
    assert not any(name.startswith("payment") for name in headers)


def test_openai_async_chat_and_stream(money: Money) -> None:
    transport = AsyncPaymentTransport([money.method()], max_amount="0.05")

    async def go() -> tuple[str, str]:
        async with AsyncOpenAI(
            base_url=f"{money.gateway.url}/openai/v1",
            api_key="client-side-key",
            http_client=httpx2.AsyncClient(transport=transport),
            max_retries=0,
        ) as client:
            chat = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "async chat"}]
            )
            stream = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "async stream"}], stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            return chat.choices[0].message.content or "", text

    chat, streamed = asyncio.run(go())
    assert (chat, streamed) == (reply_text("async chat"), reply_text("async stream"))
    check(money, transport, 2)


def test_anthropic_sync_message_and_stream(money: Money) -> None:
    transport = PaymentTransport([money.method()], max_amount="0.05")
    client = Anthropic(
        base_url=f"{money.gateway.url}/anthropic",
        api_key="client-side-key",
        http_client=httpx2.Client(transport=transport),
        max_retries=0,
    )
    message = client.messages.create(
        model=CLAUDE, max_tokens=50, messages=[{"role": "user", "content": "sync message"}]
    )
    assert [b.text for b in message.content if b.type == "text"] == [reply_text("sync message")]
    with client.messages.stream(
        model=CLAUDE, max_tokens=50, messages=[{"role": "user", "content": "a streamed one"}]
    ) as stream:
        assert "".join(stream.text_stream) == reply_text("a streamed one")
    check(money, transport, 2)
    headers, _ = money.gateway.anthropic.seen[-1]
    assert headers["x-api-key"] == ANTHROPIC_KEY


def test_anthropic_async_message_and_stream(money: Money) -> None:
    transport = AsyncPaymentTransport([money.method()], max_amount="0.05")

    async def go() -> tuple[str, str]:
        async with AsyncAnthropic(
            base_url=f"{money.gateway.url}/anthropic",
            api_key="client-side-key",
            http_client=httpx2.AsyncClient(transport=transport),
            max_retries=0,
        ) as client:
            message = await client.messages.create(
                model=CLAUDE, max_tokens=50, messages=[{"role": "user", "content": "async one"}]
            )
            async with client.messages.stream(
                model=CLAUDE, max_tokens=50, messages=[{"role": "user", "content": "async two"}]
            ) as stream:
                text = "".join([t async for t in stream.text_stream])
            return "".join(b.text for b in message.content if b.type == "text"), text

    assert asyncio.run(go()) == (reply_text("async one"), reply_text("async two"))
    check(money, transport, 2)


def test_tempo_pays_the_recipient_exactly_the_price(tempo_gateway: Gateway, chain: Anvil) -> None:
    before = chain.balance(RECIPIENT)
    transport = PaymentTransport([chain.payer().method], max_amount="0.05")
    client = OpenAI(
        base_url=f"{tempo_gateway.url}/openai/v1",
        api_key="-",
        http_client=httpx2.Client(transport=transport),
        max_retries=0,
    )
    client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "pay"}])
    assert chain.balance(RECIPIENT) - before == PRICE_BASE
    assert transport.payments[0].price == "0.01 pathUSD"


def test_the_sdks_refuse_a_call_above_max_amount_before_paying(gateway: Gateway) -> None:
    # With the SDKs' default retries: nothing is paid or forwarded. OpenAI raises the refusal as
    # it is, Anthropic wraps it in its APIConnectionError.
    transport = PaymentTransport([test_money()], max_amount="0.001")
    http = httpx2.Client(transport=transport)
    openai = OpenAI(base_url=f"{gateway.url}/openai/v1", api_key="-", http_client=http)
    anthropic = Anthropic(base_url=f"{gateway.url}/anthropic", api_key="-", http_client=http)
    before = (gateway.openai.completions, gateway.anthropic.completions)
    with pytest.raises(PaymentRefused) as refused:
        openai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert str(refused.value) == "refusing to pay 0.01 TEST: above max_amount 0.001"
    with pytest.raises(APIConnectionError) as wrapped:
        anthropic.messages.create(
            model=CLAUDE, max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert isinstance(wrapped.value.__cause__, PaymentRefused)
    assert transport.payments == []
    assert (gateway.openai.completions, gateway.anthropic.completions) == before


def test_an_sdk_retry_after_an_upstream_failure_does_not_pay_twice(gateway: Gateway) -> None:
    gateway.openai.fail_next(1, 503)
    transport = PaymentTransport([test_money()], max_amount="0.05")
    client = OpenAI(
        base_url=f"{gateway.url}/openai/v1",
        api_key="-",
        http_client=httpx2.Client(transport=transport),
        max_retries=1,  # the SDK retries the 503 itself
    )
    chat = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "retried"}]
    )
    assert chat.choices[0].message.content == reply_text("retried")
    first, second = transport.payments
    assert (first.status, first.receipt, first.redeemed) == (503, None, False)
    assert (second.status, second.redeemed) == (200, True)
    assert second.receipt is not None and first.credential == second.credential
    assert transport.guard.spent == first.amount
    row = next(r for r in ledger(gateway.state) if r.reference == second.receipt.reference)
    assert (row.status, row.attempts) == ("delivered", 2)
