"""The official OpenAI SDK (sync) paying per call through the gateway.

    .venv/bin/python examples/clients/openai_chat.py [--stream] [PROMPT]

Pays with test money, or with Tempo when $MPP_PRIVATE_KEY is set ($MPP_RPC_URL names the
chain's RPC). $MPP_PROXY_URL is the gateway (default http://127.0.0.1:4402).
"""

from __future__ import annotations

import os
import sys

import httpx2
from openai import OpenAI

from mpp_proxy.client import wallet_from_env
from mpp_proxy.client.httpx2 import PaymentTransport

GATEWAY = os.environ.get("MPP_PROXY_URL", "http://127.0.0.1:4402")
MODEL = os.environ.get("OPENAI_MODEL", "gpt-4o-mini")


def main(args: list[str]) -> None:
    stream = "--stream" in args
    prompt = " ".join(a for a in args if a != "--stream") or "Say hello in five words."
    transport = PaymentTransport(
        wallet_from_env().methods,
        max_amount="0.05",  # refuse any call that costs more, before signing anything
        budget="0.50",  # and stop once this much is spent
        allow_hosts=[GATEWAY],  # pay this gateway only
    )
    client = OpenAI(
        base_url=f"{GATEWAY}/openai/v1",
        api_key="paid-per-call",  # the gateway holds the real key; this one is never forwarded
        http_client=httpx2.Client(transport=transport, timeout=60),
    )
    messages = [{"role": "user", "content": prompt}]
    if stream:
        for chunk in client.chat.completions.create(model=MODEL, messages=messages, stream=True):
            if chunk.choices:
                print(chunk.choices[0].delta.content or "", end="", flush=True)
        print()
    else:
        chat = client.chat.completions.create(model=MODEL, messages=messages)
        print(chat.choices[0].message.content)
    for paid in transport.payments:
        reference = paid.receipt.reference if paid.receipt else "(no receipt)"
        print(f"paid {paid.price} with {paid.payment_method}: {reference}")


if __name__ == "__main__":
    main(sys.argv[1:])
