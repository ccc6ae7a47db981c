"""Pay for a forecast with plain httpx: free calls pass, a 402 is paid within the guards.

    .venv/bin/python examples/clients/httpx_weather.py [CITY]

Pays with test money, or with Tempo when $MPP_PRIVATE_KEY is set ($MPP_RPC_URL names the
chain's RPC). $MPP_PROXY_URL is the gateway (default http://127.0.0.1:4402).
"""

from __future__ import annotations

import os
import sys

import httpx

from mpp_proxy.client import PaymentTransport, wallet_from_env

GATEWAY = os.environ.get("MPP_PROXY_URL", "http://127.0.0.1:4402")


def main(city: str) -> None:
    transport = PaymentTransport(
        wallet_from_env().methods,
        max_amount="0.01",  # refuse any call that costs more, before signing anything
        budget="0.10",  # and stop once this much is spent
        allow_hosts=[GATEWAY],  # pay this gateway only
    )
    with httpx.Client(transport=transport, base_url=GATEWAY, timeout=60) as client:
        print("cities:", client.get("/weather/v1/cities").json()["cities"])  # free
        forecast = client.get(f"/weather/v1/forecast/{city}")  # 402, paid, retried
        forecast.raise_for_status()
        print("today in", forecast.json()["city"], forecast.json()["days"][0])
    for paid in transport.payments:
        reference = paid.receipt.reference if paid.receipt else "(no receipt)"
        print(f"paid {paid.price} with {paid.payment_method}: {reference}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "lisbon")
