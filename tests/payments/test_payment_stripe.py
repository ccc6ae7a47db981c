"""Stripe through the gate: pympp's Stripe method against a fake Stripe API on loopback."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from mpp import Challenge, Receipt
from mpp.methods.stripe import client as stripe_client
from mpp.runtime import CredentialParams
from payment_harness import Harness, config, header, paid, with_harness, www_authenticate

from mpp_proxy.config.model import Secret, StripeMethod
from mpp_proxy.payments import Authorization
from mpp_proxy.problems import Problem
from tests.support.fake_stripe import FakeStripe

FORECAST = "GET /v1/forecast/:city"
CHAT = "POST /v1/chat"


@pytest.fixture
def stripe() -> Iterator[FakeStripe]:
    with FakeStripe() as fake:
        yield fake


def stripe_config(api_base: str, secret_key: str, **proxy: Any) -> Any:
    method = StripeMethod(
        "card", secret_key=Secret(secret_key), network_id="bn_test", api_base=api_base
    )
    return config(
        paid("GET", "/v1/forecast/:city", "0.05", "card"),
        paid("POST", "/v1/chat", "0.05", "card"),
        methods=(method,),
        **proxy,
    )


async def sign(d: Problem, fake: FakeStripe, outcome: str = "succeeded") -> str:
    async def create_token(params: Any) -> str:
        return fake.grant(int(params.amount), params.currency, outcome)

    method = stripe_client.charge(create_token=create_token, payment_method="pm_card_visa")
    challenge = Challenge.from_www_authenticate(www_authenticate(d)[0])
    return await method.create_credential(CredentialParams(challenge=challenge))


async def present(h: Harness, route: str, path: str, credential: str) -> Authorization | Problem:
    return await h.authorize(h.request(route, path, headers=[("Authorization", credential)]))


def doc(d: Any) -> dict[str, Any]:
    assert isinstance(d, Problem), d
    return dict(json.loads(d.body))


def test_stripe_payment_confirms_a_payment_intent(stripe: FakeStripe) -> None:
    async def body(h: Harness) -> None:
        d = await h.challenge(h.request(FORECAST, "/api/v1/forecast/paris"))
        c = Challenge.from_www_authenticate(www_authenticate(d)[0])
        assert c.method == "stripe" and c.request["amount"] == "5"
        assert c.request["currency"] == "usd"
        assert c.request["methodDetails"]["networkId"] == "bn_test"
        auth = await present(h, FORECAST, "/api/v1/forecast/paris", await sign(d, stripe))
        assert isinstance(auth, Authorization), getattr(auth, "body", auth)
        (intent,) = stripe.intents
        assert (intent["amount"], intent["currency"], intent["status"]) == (5, "usd", "succeeded")
        receipt = Receipt.from_payment_receipt(header(auth, "payment-receipt") or "")
        assert receipt.method == "stripe" and receipt.reference == intent["id"]
        assert stripe.calls[0]["headers"]["idempotency-key"].startswith("mpp_" + c.id)
        row = await h.store.get_payment(auth.payment.key)
        assert row is not None and (row.kind, row.currency, row.reference) == (
            "stripe",
            "usd",
            intent["id"],
        )
        await auth.delivered()

    with_harness(body, stripe_config(stripe.url, stripe.secret_key))


def test_stripe_replays_are_403_and_never_charge_twice(stripe: FakeStripe) -> None:
    async def body(h: Harness) -> None:
        d = await h.challenge(h.request(FORECAST, "/api/v1/forecast/paris"))
        credential = await sign(d, stripe)
        auth = await present(h, FORECAST, "/api/v1/forecast/paris", credential)
        assert isinstance(auth, Authorization)
        await auth.delivered()
        replay = await present(h, FORECAST, "/api/v1/forecast/paris", credential)
        assert isinstance(replay, Problem) and replay.status == 403
        # the same payment under another encoding reaches Stripe, whose idempotency key says no
        token = credential.split(" ", 1)[1]
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        raw = json.dumps(data, indent=2).encode()
        other = "Payment " + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        again = await present(h, FORECAST, "/api/v1/forecast/paris", other)
        assert isinstance(again, Problem) and again.status == 403, again.body
        assert len(stripe.intents) == 1

    with_harness(body, stripe_config(stripe.url, stripe.secret_key))


def test_stripe_refusals(stripe: FakeStripe) -> None:
    async def body(h: Harness) -> None:
        d = await h.challenge(h.request(FORECAST, "/api/v1/forecast/paris"))
        declined = await present(
            h, FORECAST, "/api/v1/forecast/paris", await sign(d, stripe, "declined")
        )
        assert declined.status == 402 and doc(declined)["type"].endswith("/verification-failed")
        assert "declined" in doc(declined)["detail"]
        assert www_authenticate(declined)  # type: ignore[arg-type]
        action = await present(
            h, FORECAST, "/api/v1/forecast/paris", await sign(d, stripe, "requires_action")
        )
        assert action.status == 402 and doc(action)["type"].endswith("/payment-action-required")
        # bought for one route, presented on another
        credential = await sign(d, stripe)
        other = await present(h, CHAT, "/api/v1/chat", credential)
        assert other.status == 402 and doc(other)["type"].endswith("/invalid-challenge")
        assert await h.store.list_payments() == []

    with_harness(body, stripe_config(stripe.url, stripe.secret_key))


def test_stripe_expired_challenge(stripe: FakeStripe) -> None:
    async def body(h: Harness) -> None:
        import asyncio

        d = await h.challenge(h.request(FORECAST, "/api/v1/forecast/paris"))
        credential = await sign(d, stripe)
        await asyncio.sleep(1.1)
        r = await present(h, FORECAST, "/api/v1/forecast/paris", credential)
        assert r.status == 402 and doc(r)["type"].endswith("/payment-expired")
        assert stripe.calls == []

    with_harness(body, stripe_config(stripe.url, stripe.secret_key, challenge_ttl=0.5))


def test_stripe_wrong_key_never_shows_the_key(stripe: FakeStripe) -> None:
    wrong = "sk_test_wrong_key_987654321"

    async def body(h: Harness) -> None:
        d = await h.challenge(h.request(FORECAST, "/api/v1/forecast/paris"))
        r = await present(h, FORECAST, "/api/v1/forecast/paris", await sign(d, stripe))
        assert isinstance(r, Problem) and r.status == 402
        assert wrong.encode() not in r.body and stripe.secret_key.encode() not in r.body
        assert b"sk_test" not in r.body

    with_harness(body, stripe_config(stripe.url, wrong))


def test_stripe_unreachable_is_500(stripe: FakeStripe) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def body(h: Harness) -> None:
        d = await h.challenge(h.request(FORECAST, "/api/v1/forecast/paris"))
        r = await present(h, FORECAST, "/api/v1/forecast/paris", await sign(d, stripe))
        assert isinstance(r, Problem) and r.status == 500
        assert doc(r)["type"].endswith("/internal-payment-error")
        assert await h.store.list_payments() == []

    with_harness(body, stripe_config(closed, stripe.secret_key))
