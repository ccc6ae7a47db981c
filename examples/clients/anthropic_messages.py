"""The official Anthropic SDK paying per message through the gateway.

    .venv/bin/python examples/clients/anthropic_messages.py [--stream] [PROMPT]

Pays with test money, or with Tempo when $MPP_PRIVATE_KEY is set ($MPP_RPC_URL names the
chain's RPC). $MPP_PROXY_URL is the gateway (default http://127.0.0.1:4402).
"""

from __future__ import annotations

import os
import sys

import httpx2
from anthropic import Anthropic

from mpp_proxy.client import wallet_from_env
from mpp_proxy.client.httpx2 import PaymentTransport

GATEWAY = os.environ.get("MPP_PROXY_URL", "http://127.0.0.1:4402")
MODEL = os.environ.get("ANTHROPIC_MODEL", "claude-3-5-haiku-latest")


def main(args: list[str]) -> None:
    stream = "--stream" in args
    prompt = " ".join(a for a in args if a != "--stream") or "Say hello in five words."
    transport = PaymentTransport(
        wallet_from_env().methods, max_amount="0.05", budget="0.50", allow_hosts=[GATEWAY]
    )
    client = Anthropic(
        base_url=f"{GATEWAY}/anthropic",
        api_key="paid-per-call",  # the gateway holds the real key; this one is never forwarded
        http_client=httpx2.Client(transport=transport, timeout=60),
    )
    messages = [{"role": "user", "content": prompt}]
    if stream:
        with client.messages.stream(model=MODEL, max_tokens=200, messages=messages) as answer:
            for text in answer.text_stream:
                print(text, end="", flush=True)
        print()
    else:
        message = client.messages.create(model=MODEL, max_tokens=200, messages=messages)
        print("".join(block.text for block in message.content if block.type == "text"))
    for paid in transport.payments:
        reference = paid.receipt.reference if paid.receipt else "(no receipt)"
        print(f"paid {paid.price} with {paid.payment_method}: {reference}")


if __name__ == "__main__":
    main(sys.argv[1:])
