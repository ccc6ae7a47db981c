"""How payments end beyond delivered and credited, as every sink sees it: a settlement refused
after the upstream answered (test money claimed elsewhere meanwhile), a card payment refunded
(a loopback Stripe), a credit voided through the admin API. Counted in metrics (no revenue),
announced by webhooks and events, written in the access log."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mpp import Challenge
from mpp.methods.stripe import client as stripe_client
from mpp.runtime import CredentialParams
from observe_harness import (
    SECRET_KEY,
    WEBHOOK_SECRET,
    Receiver,
    samples,
    wait_until,
    write_config,
)

from mpp_proxy import Proxy, load_config
from mpp_proxy.client.testmoney import pay_challenge
from mpp_proxy.observe.events import Event, PaymentSettleFailed
from mpp_proxy.state import PaymentStatus, open_store
from tests.support.fake_stripe import FakeStripe
from tests.support.play_money import challenge_id, settle_elsewhere
from tests.support.served import Served
from tests.support.upstream import Upstream

STRIPE_KEY = "sk_test_observe_refunds_0123456789"
ADMIN_TOKEN = "observe-admin-token-0123456789abcdef0123"
HOOK = f"""
[[proxy.webhooks]]
url = "http://127.0.0.1:{{port}}/hooks/mpp"
secret = "{WEBHOOK_SECRET}"
"""
CARD = f"""
[methods.card]
kind = "stripe"
secret_key = "{STRIPE_KEY}"
network_id = "bn_test"
api_base = "{{stripe}}"
on_failure = "refund"

[services.cards]
base_url = "{{upstream}}"
[services.cards.routes]
"GET /status/:code" = {{{{ price = "0.50", pay_with = ["card"] }}}}
"""


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


def state_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


async def _rows(state: str) -> list[Any]:
    store = open_store(state)
    await store.open()
    try:
        return list(await store.list_payments())
    finally:
        await store.close()


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of `name` over the samples whose labels include `labels`."""
    total = 0.0
    for key, value in samples(text).items():
        if key.split("{", 1)[0] == name and all(f'{k}="{v}"' in key for k, v in labels.items()):
            total += value
    return total


def test_a_settlement_refused_after_the_upstream_answered_is_seen_by_every_sink(
    tmp_path: Path, upstream: Upstream, receiver: Receiver, capfd: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, upstream.url, "[proxy.log]\naccess = true\n")
    config.write_text(config.read_text() + HOOK.format(port=receiver.port))
    app = Proxy(load_config(str(config)))
    seen: list[Event] = []
    app.events.subscribe(seen.append)
    state = state_url(tmp_path)
    with Served(app) as s, httpx.Client(base_url=s.url, timeout=10) as client:
        url = "/slow/sleep?s=0.6"
        first = client.get(url)
        assert first.status_code == 402
        credential = pay_challenge(first.headers.get_list("www-authenticate"))
        cid = challenge_id(credential)
        headers = {"authorization": credential, "x-request-id": "sf-1"}
        answers: list[httpx.Response] = []
        thread = threading.Thread(target=lambda: answers.append(client.get(url, headers=headers)))
        thread.start()
        # While the upstream sleeps the payment is pending (checked, not settled).
        wait_until(
            lambda: any(
                r.challenge_id == cid and r.status is PaymentStatus.PENDING
                for r in asyncio.run(_rows(state))
            ),
            timeout=5,
            step=0.02,
        )
        asyncio.run(settle_elsewhere(state, cid))
        thread.join(10)
        [refused] = answers
        assert refused.status_code == 402, refused.text
        assert refused.headers.get_list("www-authenticate"), "fresh challenges come with it"
        text = client.get("/metrics").text
        wait_until(lambda: len(receiver.received) == 2, timeout=15)

    route = {"service": "slow", "route": "GET /sleep"}
    assert metric(text, "mpp_proxy_settlement_errors_total", method="play") == 1
    ended = {**route, "method": "play", "currency": "TEST"}
    assert metric(text, "mpp_proxy_payments_total", outcome="settle_failed", **ended) == 1
    assert metric(text, "mpp_proxy_payments_total", outcome="delivered") == 0
    assert metric(text, "mpp_proxy_revenue_total") == 0, "nothing was charged: no revenue"
    assert metric(text, "mpp_proxy_paid_not_delivered_total") == 0, "nor paid and undelivered"
    # The first 402 and the refusal's fresh one.
    assert metric(text, "mpp_proxy_challenges_total", method="play", **route) == 2

    types = sorted(e["type"] for e in receiver.received)
    assert types == ["delivery.failed", "payment.settle_failed"]
    for event in receiver.received:
        data = event["data"]
        assert (data["outcome"], data["request_id"], data["status"]) == (
            "settle_failed",
            "sf-1",
            402,
        )
        assert (data["amount"], data["reason"]) == ("0.05", "settle-failed")
        assert data["reference"] == "", "it never settled"
    assert receiver.bad_signatures == 0

    [failed] = [e for e in seen if isinstance(e, PaymentSettleFailed)]
    assert (failed.request_id, failed.service, failed.route) == ("sf-1", "slow", "GET /sleep")
    assert failed.metadata["outcome"] == "settle_failed" and failed.metadata["status"] == 402

    out = capfd.readouterr().out
    [line] = [json.loads(x) for x in out.splitlines() if '"request_id":"sf-1"' in x]
    assert (line["status"], line["source"], line["problem"]) == (
        402,
        "proxy",
        "verification-failed",
    )
    assert line["payment"]["outcome"] == "settle_failed"
    assert line["upstream_us"] > 0, "the upstream did answer"
    assert SECRET_KEY not in out and WEBHOOK_SECRET not in out


def test_a_refunded_card_payment_is_counted_undelivered_and_announced(
    tmp_path: Path, upstream: Upstream, receiver: Receiver
) -> None:
    with FakeStripe(secret_key=STRIPE_KEY) as stripe:
        extra = HOOK.format(port=receiver.port)
        config = write_config(tmp_path, upstream.url, extra)
        config.write_text(
            config.read_text() + CARD.format(stripe=stripe.url, upstream=upstream.url)
        )
        app = Proxy(load_config(str(config)))
        with Served(app) as s, httpx.Client(base_url=s.url, timeout=10) as client:
            first = client.get("/cards/status/503")
            assert first.status_code == 402, first.text

            async def token(params: stripe_client.OnChallengeParameters) -> str:
                return stripe.grant(int(params.amount), params.currency)

            method = stripe_client.charge(create_token=token, payment_method="pm_card_visa")
            challenge = Challenge.from_www_authenticate(first.headers["www-authenticate"])
            credential = asyncio.run(
                method.create_credential(CredentialParams(challenge=challenge))
            )
            r = client.get("/cards/status/503", headers={"authorization": credential})
            assert r.status_code == 503 and r.json()["type"].endswith("/payment-refunded")
            text = client.get("/metrics").text
            wait_until(lambda: len(receiver.received) == 2, timeout=15)
        [refund] = stripe.refunds

    ended = {"service": "cards", "route": "GET /status/:code", "method": "card"}
    assert metric(text, "mpp_proxy_payments_total", outcome="refunded", **ended) == 1
    assert metric(text, "mpp_proxy_paid_not_delivered_total", **ended) == 1
    assert metric(text, "mpp_proxy_revenue_total") == 0
    assert metric(text, "mpp_proxy_settlement_errors_total") == 0
    by_type = {e["type"]: e["data"] for e in receiver.received}
    assert set(by_type) == {"payment.refunded", "delivery.failed"}
    refunded = by_type["payment.refunded"]
    assert refunded["outcome"] == "refunded" and refunded["reason"] == "upstream-status"
    assert refunded["reference"] == refund["payment_intent"] and refunded["amount"] == "0.50"


def test_a_credit_voided_through_the_admin_api_is_counted_and_announced(
    tmp_path: Path, upstream: Upstream, receiver: Receiver
) -> None:
    admin = f'[proxy.admin]\nbearer_token = "{ADMIN_TOKEN}"\n'
    config = write_config(tmp_path, upstream.url, admin + HOOK.format(port=receiver.port))
    app = Proxy(load_config(str(config)))
    bearer = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    with Served(app) as s, httpx.Client(base_url=s.url, timeout=10) as client:
        first = client.get("/svc/status/first/503")  # settled before forwarding: a credit
        credential = pay_challenge(first.headers.get_list("www-authenticate"))
        assert (
            client.get("/svc/status/first/503", headers={"authorization": credential})
            .json()["type"]
            .endswith("/payment-credited")
        )
        [credit] = client.get("/admin/credits", headers=bearer).json()["credits"]
        voided = client.post(
            f"/admin/credits/{credit['key']}/void",
            headers={**bearer, "x-request-id": "void-1"},
            json={"reason": "refunded by hand", "by": "ops"},
        )
        assert voided.status_code == 200, voided.text
        assert voided.headers["x-request-id"] == "void-1"
        text = client.get("/metrics").text
        wait_until(lambda: len(receiver.received) == 3, timeout=15)

    ended = {"service": "svc", "route": "GET /status/first/:code", "method": "play"}
    assert metric(text, "mpp_proxy_payments_total", outcome="credited", **ended) == 1
    assert metric(text, "mpp_proxy_payments_total", outcome="voided", **ended) == 1
    assert metric(text, "mpp_proxy_revenue_total") == 0
    by_type = {e["type"]: e["data"] for e in receiver.received}
    assert set(by_type) == {"payment.credited", "delivery.failed", "payment.voided"}
    gone = by_type["payment.voided"]
    assert gone["reference"] == by_type["payment.credited"]["reference"]
    assert (gone["outcome"], gone["reason"]) == ("voided", "voided-by-operator")
    assert ADMIN_TOKEN not in json.dumps(receiver.received)
