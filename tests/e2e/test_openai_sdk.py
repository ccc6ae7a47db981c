"""A real client: the official openai SDK pays per call through the proxy with pympp's transport."""

from __future__ import annotations

import json

import httpx
from mpp.client.transport import PaymentTransport
from openai import AsyncOpenAI

from tests.e2e.harness import (
    PRICE_BASE,
    TEMPO_RECIPIENT,
    UPSTREAM_KEY,
    b64decode,
    ledger,
    run,
    wait_for,
)
from tests.e2e.parties import Deployment, Wallet
from tests.support.anvil import Anvil
from tests.support.openai_upstream import MODEL, OpenAIUpstream, reply_text


def sdk(proxy: Deployment, wallet: Wallet, receipts: list[str]) -> AsyncOpenAI:
    transport = PaymentTransport(methods=[wallet.method("tempo")], inner=httpx.AsyncHTTPTransport())

    async def keep_receipt(response: httpx.Response) -> None:
        if "payment-receipt" in response.headers:
            receipts.append(response.headers["payment-receipt"])

    http = httpx.AsyncClient(transport=transport, event_hooks={"response": [keep_receipt]})
    # The SDK's own retries would hide a failure; the proxy's answer must be right first time.
    return AsyncOpenAI(
        base_url=proxy.url + "/openai/v1",
        api_key="unused",
        # openai 3.x is typed for httpx2 clients yet accepts an httpx one at runtime, and
        # pympp's PaymentTransport is an httpx transport.
        http_client=http,  # type: ignore[arg-type]
        max_retries=0,
    )


def test_openai_sdk_chat_completion_is_paid_with_tempo_automatically(
    proxy: Deployment, wallet: Wallet, chain: Anvil, openai_upstream: OpenAIUpstream
) -> None:
    before = chain.balance(TEMPO_RECIPIENT)
    receipts: list[str] = []

    async def go() -> list[str]:
        async with sdk(proxy, wallet, receipts) as client:
            answers = []
            for prompt in ("first question", "second question"):
                completion = await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": prompt}]
                )
                answers.append(completion.choices[0].message.content or "")
            return answers

    answers = run(go())

    assert answers == [reply_text("first question"), reply_text("second question")]
    # One payment per call, each from its own payer, each on chain.
    assert len(receipts) == 2
    assert len(set(wallet.tempo.payers)) == 2
    assert chain.balance(TEMPO_RECIPIENT) - before == 2 * PRICE_BASE
    headers, body = openai_upstream.seen[-1]
    assert headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert not any(name.startswith("payment") for name in headers)
    assert body["model"] == MODEL
    references = {json.loads(b64decode(r))["reference"] for r in receipts}
    assert wait_for(
        lambda: (
            sorted(p.status for p in ledger(proxy.state) if p.reference in references)
            == ["delivered", "delivered"]
        )
    )
    for tx in references:
        assert (chain.receipt(tx) or {}).get("status") == "0x1"


def test_openai_sdk_streaming_chat_completion_is_paid_and_streams_every_chunk(
    proxy: Deployment, wallet: Wallet, chain: Anvil
) -> None:
    before = chain.balance(TEMPO_RECIPIENT)
    receipts: list[str] = []
    prompt = "stream me a few words please"

    async def go() -> tuple[str, list[str | None]]:
        async with sdk(proxy, wallet, receipts) as client:
            stream = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": prompt}], stream=True
            )
            text = ""
            finishes: list[str | None] = []
            async for chunk in stream:
                if chunk.choices:
                    text += chunk.choices[0].delta.content or ""
                    finishes.append(chunk.choices[0].finish_reason)
            return text, finishes

    text, finishes = run(go())

    assert text == reply_text(prompt)
    assert len(finishes) == len(reply_text(prompt).split(" ")) + 2
    assert finishes[-1] == "stop"
    assert len(receipts) == 1
    assert chain.balance(TEMPO_RECIPIENT) - before == PRICE_BASE
