"""The official OpenAI SDK (async) paying per call through the gateway.

    .venv/bin/python examples/clients/openai_async.py [--stream] [PROMPT]

Pays with test money, or with Tempo when $MPP_PRIVATE_KEY is set ($MPP_RPC_URL names the
chain's RPC). $MPP_PROXY_URL is the gateway (default http://127.0.0.1:4402).
"""

from __future__ import annotations

import asyncio
import os
import sys

import httpx2
from openai import AsyncOpenAI

from mpp_proxy.client import wallet_from_env
from mpp_proxy.client.httpx2 import AsyncPaymentTransport

GATEWAY = os.environ.get("MPP_PROXY_URL", "http://127.0.0.1:4402")
MODEL = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")


async def main(args: list[str]) -> None:
    stream = "--stream" in args
    prompt = " ".join(a for a in args if a != "--stream") or "Say hello in five words."
    transport = AsyncPaymentTransport(
        wallet_from_env().methods, max_amount="0.05", budget="0.50", allow_hosts=[GATEWAY]
    )
    async with AsyncOpenAI(
        base_url=f"{GATEWAY}/openai/v1",
        api_key="paid-per-call",
        http_client=httpx2.AsyncClient(transport=transport, timeout=60),
    ) as client:
        messages = [{"role": "user", "content": prompt}]
        if stream:
            chunks = await client.chat.completions.create(
                model=MODEL, messages=messages, stream=True
            )
            async for chunk in chunks:
                if chunk.choices:
                    print(chunk.choices[0].delta.content or "", end="", flush=True)
            print()
        else:
            chat = await client.chat.completions.create(model=MODEL, messages=messages)
            print(chat.choices[0].message.content)
    for paid in transport.payments:
        reference = paid.receipt.reference if paid.receipt else "(no receipt)"
        print(f"paid {paid.price} with {paid.payment_method}: {reference}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
