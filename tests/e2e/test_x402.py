"""x402 beside MPP: the official x402 client pays an `evm` route of the proxy (offline: the EVM
method settles through a local hook) and gets PAYMENT-RESPONSE; MPP clients still pay it."""

from __future__ import annotations

import asyncio
import json

import httpx
from eth_account import Account
from x402 import x402Client
from x402.extensions.payment_identifier import append_payment_identifier_to_extensions
from x402.http.clients import wrapHttpxWithPayment
from x402.http.utils import (
    decode_payment_required_header,
    decode_payment_response_header,
    encode_payment_signature_header,
)
from x402.mechanisms.evm.exact import ExactEvmScheme

from tests.e2e.harness import EVM_RECIPIENT, challenges, ledger, receipt, wait_for
from tests.e2e.parties import Deployment, Wallet

ROUTE = "/api/echo/evm/a"


def x402_client() -> x402Client:
    client = x402Client()
    client.register("eip155:*", ExactEvmScheme(signer=Account.create()))
    # The test token is not one of the client's known assets: allow it by name.
    client.set_spend_controls({"allowed_assets": True})
    return client


def settled(served: Deployment) -> list[dict[str, object]]:
    try:
        return [json.loads(line) for line in served.settled.read_text().splitlines()]
    except FileNotFoundError:
        return []


def test_the_402_carries_payment_required_next_to_the_mpp_challenge(
    after_proxy: Deployment,
) -> None:
    r = httpx.get(after_proxy.url + ROUTE)
    assert r.status_code == 402
    assert any('method="evm"' in c for c in challenges(r))
    required = decode_payment_required_header(r.headers["payment-required"])
    [accepted] = required.accepts
    assert (accepted.scheme, accepted.network) == ("exact", "eip155:31337")
    assert accepted.pay_to.lower() == EVM_RECIPIENT.lower() and accepted.amount == "50000"
    assert required.resource is not None and required.resource.url == after_proxy.url + ROUTE
    # A route without an evm offer makes no x402 offer.
    assert "payment-required" not in httpx.get(after_proxy.url + "/api/echo/tempo/a").headers


def test_the_official_x402_client_pays_and_gets_payment_response(after_proxy: Deployment) -> None:
    before = len(settled(after_proxy))

    async def pay() -> httpx.Response:
        async with wrapHttpxWithPayment(x402_client(), timeout=30) as client:
            return await client.get(after_proxy.url + ROUTE)

    r = asyncio.run(pay())

    assert r.status_code == 200, r.text
    paid = decode_payment_response_header(r.headers["payment-response"])
    assert paid.success and paid.network == "eip155:31337"
    assert paid.transaction == receipt(r)["reference"]
    assert len(settled(after_proxy)) == before + 1  # settled once, after the upstream answered
    assert r.json()["path"] == "/echo/evm/a"
    assert not any(k.lower().startswith("payment") for k, _ in r.json()["headers"])
    assert wait_for(
        lambda: any(
            p.reference == paid.transaction and p.status == "delivered"
            for p in ledger(after_proxy.state)
        )
    )


def test_mpp_clients_still_pay_the_same_route(after_proxy: Deployment, wallet: Wallet) -> None:
    credential = wallet.pay("evm", challenges(httpx.get(after_proxy.url + ROUTE)))
    r = httpx.get(after_proxy.url + ROUTE, headers={"authorization": credential}, timeout=30)
    assert r.status_code == 200 and "payment-receipt" in r.headers
    assert "payment-response" not in r.headers


def test_an_x402_payment_is_used_once_and_its_payment_identifier_replays(
    after_proxy: Deployment,
) -> None:
    url = after_proxy.url + ROUTE
    required = decode_payment_required_header(httpx.get(url).headers["payment-required"])
    payload = asyncio.run(x402_client().create_payment_payload(required))
    extensions = dict(payload.extensions or {})
    append_payment_identifier_to_extensions(extensions, "retry-0123456789abcdef")
    payload.extensions = extensions
    header = {"payment-signature": encode_payment_signature_header(payload)}
    before = len(settled(after_proxy))

    first = httpx.get(url, headers=header, timeout=30)
    again = httpx.get(url, headers=header, timeout=30)

    assert first.status_code == 200, first.text
    assert again.status_code == 200 and again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    assert again.headers["payment-response"] == first.headers["payment-response"]
    assert len(settled(after_proxy)) == before + 1
    # Without an identifier a spent payment is refused like any used credential.
    plain = payload.model_copy(update={"extensions": None})
    r = httpx.get(url, headers={"payment-signature": encode_payment_signature_header(plain)})
    assert r.status_code in (402, 403) and "payment-response" not in r.headers
