"""Stripe's on_failure = "refund": an undelivered card payment is given back, once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from core_harness import Served, service
from mpp import Challenge
from mpp.methods.stripe import client as stripe_client
from mpp.runtime import CredentialParams

from mpp_proxy.config.model import (
    Config,
    Price,
    ProxySettings,
    Route,
    Secret,
    StripeMethod,
    Timeouts,
)
from mpp_proxy.core import Proxy
from mpp_proxy.state import PaymentStatus, open_store
from tests.support.fake_stripe import FakeStripe
from tests.support.upstream import Upstream

KEY = "sk_test_refunds0123456789"
PRICE = Price(Decimal("0.50"), ("card",))  # shared payment tokens need 50 cents at least


@pytest.fixture(scope="module")
def stripe() -> Iterator[FakeStripe]:
    with FakeStripe(secret_key=KEY) as fake:
        yield fake


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('refund') / 'state.db'}"


@pytest.fixture(scope="module")
def client(upstream: Upstream, stripe: FakeStripe, state: str) -> Iterator[httpx.Client]:
    card = StripeMethod("card", secret_key=Secret(KEY), network_id="bn_test", api_base=stripe.url)
    config = Config(
        proxy=ProxySettings(
            secret_key=Secret("core-refund-test-secret-0123456789abcdef"),
            realm="core.test",
            state=state,
        ),
        methods=(card,),
        services=(
            service(
                "api",
                upstream.url,
                routes=(
                    Route("GET", "/status/:code", PRICE, on_failure="refund"),
                    Route("GET", "/echo/*", PRICE, on_failure="refund"),
                ),
                timeouts=Timeouts(connect=1.0, read=2.0, write=2.0, pool=1.0),
            ),
        ),
    )
    with Served(Proxy(config)) as s, httpx.Client(base_url=s.url, timeout=10) as c:
        yield c


def pay(client: httpx.Client, stripe: FakeStripe, url: str) -> str:
    r = client.get(url)
    assert r.status_code == 402, r.text

    async def create_token(params: stripe_client.OnChallengeParameters) -> str:
        return stripe.grant(int(params.amount), params.currency)

    method = stripe_client.charge(create_token=create_token, payment_method="pm_card_visa")
    challenge = Challenge.from_www_authenticate(r.headers["www-authenticate"])
    return asyncio.run(method.create_credential(CredentialParams(challenge=challenge)))


def status_of(state: str, reference: str) -> tuple[PaymentStatus, str]:
    async def read() -> tuple[PaymentStatus, str]:
        store = open_store(state)
        await store.open()
        try:
            [row] = [p for p in await store.list_payments() if p.reference == reference]
            return row.status, row.refund
        finally:
            await store.close()

    return asyncio.run(read())


def refund_calls(stripe: FakeStripe) -> list[str]:
    return [c["headers"]["idempotency-key"] for c in stripe.calls if c["path"] == "/v1/refunds"]


def test_an_upstream_503_refunds_the_card_payment_once(
    client: httpx.Client, stripe: FakeStripe, state: str
) -> None:
    credential = pay(client, stripe, "/api/status/503")
    refunds = len(stripe.refunds)
    r = client.get("/api/status/503", headers={"authorization": credential})
    assert r.status_code == 503, r.text
    assert "payment-receipt" not in r.headers
    doc = r.json()
    assert doc["type"].endswith("/payment-refunded") and doc["upstreamStatus"] == 503
    refund = doc["refund"]
    assert len(stripe.refunds) == refunds + 1
    made = stripe.refunds[-1]
    assert (refund["id"], refund["reference"]) == (made["id"], made["payment_intent"])
    assert refund["id"] in doc["detail"]
    assert status_of(state, refund["reference"]) == (PaymentStatus.REFUNDED, refund["id"])
    again = client.get("/api/status/503", headers={"authorization": credential})
    assert again.status_code == 403 and again.json()["type"].endswith("/credential-refunded")
    assert len(stripe.refunds) == refunds + 1


def test_a_refund_whose_answer_was_lost_is_asked_again_with_the_same_key(
    client: httpx.Client, stripe: FakeStripe, state: str
) -> None:
    credential = pay(client, stripe, "/api/status/500")
    refunds, calls = len(stripe.refunds), len(refund_calls(stripe))
    stripe.drop_next_refund_answers = 1
    r = client.get("/api/status/500", headers={"authorization": credential})
    assert r.status_code == 500, r.text
    assert r.json()["type"].endswith("/payment-refunded")
    assert len(stripe.refunds) == refunds + 1  # refunded once
    keys = refund_calls(stripe)[calls:]
    assert len(keys) == 2 and keys[0] == keys[1]  # asked twice, with one idempotency key
    assert r.json()["refund"]["id"] == stripe.refunds[-1]["id"]


def test_a_delivered_card_payment_is_not_refunded(
    client: httpx.Client, stripe: FakeStripe, state: str
) -> None:
    credential = pay(client, stripe, "/api/echo/ok")
    refunds = len(stripe.refunds)
    r = client.get("/api/echo/ok", headers={"authorization": credential})
    assert r.status_code == 200 and "payment-receipt" in r.headers
    assert len(stripe.refunds) == refunds
    assert Path(state.removeprefix("sqlite:///")).exists()
