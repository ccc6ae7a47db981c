"""The gate's decisions with test money: every status, credits, leases, replay and concurrency."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import time
from dataclasses import replace
from typing import Any

from mpp import Challenge, Credential, Receipt
from payment_harness import (
    REALM,
    SECRET,
    UPSTREAM_KEY,
    Harness,
    config,
    harness,
    header,
    paid,
    undelivered,
    with_harness,
    www_authenticate,
)

from mpp_proxy.client.testmoney import pay_challenge
from mpp_proxy.config.model import Secret, TestMoneyMethod
from mpp_proxy.payments import Authorization
from mpp_proxy.problems import Problem
from mpp_proxy.state import Payment, PaymentStatus
from mpp_proxy.state.memory import MemoryStore

FORECAST = "GET /v1/forecast/:city"
CHAT = "POST /v1/chat"


def problem(d: Problem | Any) -> dict[str, Any]:
    assert isinstance(d, Problem), d
    doc = json.loads(d.body)
    assert header(d, "content-type") == "application/problem+json"
    assert header(d, "cache-control") == "no-store"
    return dict(doc)


async def pay(h: Harness, route: str, path: str, query: str = "") -> str:
    d = await h.challenge(h.request(route, path, query=query))
    return pay_challenge(www_authenticate(d))


async def present(
    h: Harness, route: str, path: str, credential: str, query: str = "", name: str = "Authorization"
) -> Authorization | Problem:
    return await h.authorize(h.request(route, path, query=query, headers=[(name, credential)]))


async def pay_and_present(h: Harness) -> tuple[str, Authorization]:
    """A paid credential for the Paris forecast and the Authorization it got."""
    credential = await pay(h, FORECAST, "/api/v1/forecast/paris")
    auth = await present(h, FORECAST, "/api/v1/forecast/paris", credential)
    assert isinstance(auth, Authorization), getattr(auth, "body", auth)
    return credential, auth


def reencode(credential: str, change: Any) -> str:
    token = credential.split(" ", 1)[1]
    doc = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    change(doc)
    raw = json.dumps(doc, separators=(",", ":")).encode()
    return "Payment " + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# ---------------------------------------------------------------------------- 402


def test_no_credential_gets_402_with_challenge_problem_and_no_store() -> None:
    async def body(h: Harness) -> None:
        d = await h.challenge(h.request(FORECAST, "/api/v1/forecast/paris", query="units=c"))
        doc = problem(d)
        assert doc["type"] == "https://paymentauth.org/problems/payment-required"
        assert doc["status"] == 402
        (value,) = www_authenticate(d)
        c = Challenge.from_www_authenticate(value)
        assert (c.realm, c.method, c.intent) == (REALM, "test", "charge")
        assert c.request["amount"] == "50000" and c.request["currency"] == "TEST"
        assert c.request["_mppx_scope"] == {
            "http_method": "GET",
            "resource": "/api/v1/forecast/paris",
            "query": "units=c",
        }
        assert c.verify(SECRET, REALM)
        assert c.expires is not None

    with_harness(body)


def test_each_402_is_fresh() -> None:
    async def body(h: Harness) -> None:
        req = h.request(FORECAST, "/api/v1/forecast/paris")
        a = www_authenticate(await h.challenge(req))
        b = www_authenticate(await h.challenge(req))
        assert a != b

    with_harness(body)


def test_one_challenge_per_method_in_config_order_and_accept_payment_reorders() -> None:
    cfg = config(
        paid("GET", "/v1/x", "1", "play", "chips"),
        methods=(TestMoneyMethod("play"), TestMoneyMethod("chips", currency="CHIP")),
    )

    async def body(h: Harness) -> None:
        d = await h.challenge(h.request("GET /v1/x", "/api/v1/x"))
        currencies = [
            Challenge.from_www_authenticate(v).request["currency"] for v in www_authenticate(d)
        ]
        assert currencies == ["TEST", "CHIP"]

    with_harness(body, cfg)


def test_accept_payment_orders_and_q0_excludes() -> None:
    from mpp_proxy.config.model import StripeMethod

    cfg = config(
        paid("GET", "/v1/x", "1", "play", "card"),
        methods=(
            TestMoneyMethod("play"),
            StripeMethod("card", secret_key=Secret("sk_test_x"), network_id="bn_1"),
        ),
    )

    async def body(h: Harness) -> None:
        def methods(d: Problem) -> list[str]:
            return [Challenge.from_www_authenticate(v).method for v in www_authenticate(d)]

        async def ask(accept: str | None) -> Problem:
            headers = [] if accept is None else [("Accept-Payment", accept)]
            d = await h.authorize(h.request("GET /v1/x", "/api/v1/x", headers=headers))
            assert isinstance(d, Problem)
            return d

        assert methods(await ask(None)) == ["test", "stripe"]
        assert methods(await ask("stripe/charge, test/charge;q=0.5")) == ["stripe", "test"]
        assert methods(await ask("test/charge;q=0.2, stripe;q=0.9")) == ["stripe", "test"]
        assert methods(await ask("*, test/charge;q=0")) == ["stripe"]
        assert methods(await ask("test")) == ["test"]
        d = await ask("tempo/charge")
        assert d.status == 400
        doc = problem(d)
        assert doc["type"].endswith("/method-unsupported")
        assert doc["methods"] == ["test/charge", "stripe/charge"]
        assert www_authenticate(d) == []

    with_harness(body, cfg)


# ---------------------------------------------------------------------------- success, receipts


def test_paid_request_is_authorized_with_receipt_and_delivered_once() -> None:
    async def body(h: Harness) -> None:
        credential = await pay(h, FORECAST, "/api/v1/forecast/paris")
        auth = await present(h, FORECAST, "/api/v1/forecast/paris", credential)
        assert isinstance(auth, Authorization), getattr(auth, "body", auth)
        assert not auth.redeemed
        assert header(auth, "cache-control") == "private"
        receipt = Receipt.from_payment_receipt(header(auth, "payment-receipt") or "")
        assert receipt.status == "success" and receipt.method == "test"
        assert receipt.reference.startswith("test_")
        assert receipt.extra == {"note": "test money: nothing was paid"}
        row = await h.store.get_payment(auth.payment.key)
        assert row is not None and row.status is PaymentStatus.IN_FLIGHT
        assert row.reference == receipt.reference
        assert (row.service, row.route, row.method, row.kind) == ("api", FORECAST, "play", "test")
        assert (row.amount, row.currency) == ("50000", "TEST")
        assert row.scope == "GET /api/v1/forecast/paris"
        await auth.delivered()
        await auth.delivered()  # idempotent
        row = await h.store.get_payment(auth.payment.key)
        assert row is not None and row.status is PaymentStatus.DELIVERED
        totals = await h.store.totals()
        assert [(t.count, t.amount) for t in totals] == [(1, 50000)]

    with_harness(body)


def test_payment_authorization_header_is_accepted() -> None:
    async def body(h: Harness) -> None:
        credential = await pay(h, FORECAST, "/api/v1/forecast/paris")
        auth = await present(
            h, FORECAST, "/api/v1/forecast/paris", credential, name="Payment-Authorization"
        )
        assert isinstance(auth, Authorization)
        await auth.delivered()

    with_harness(body)


def test_payment_scheme_among_other_authorization_schemes() -> None:
    async def body(h: Harness) -> None:
        credential = await pay(h, FORECAST, "/api/v1/forecast/paris")
        auth = await present(h, FORECAST, "/api/v1/forecast/paris", f"Bearer abc, {credential}")
        assert isinstance(auth, Authorization)

    with_harness(body)


def test_replay_after_delivery_is_403_without_challenge() -> None:
    async def body(h: Harness) -> None:
        credential, auth = await pay_and_present(h)
        await auth.delivered()
        d = await present(h, FORECAST, "/api/v1/forecast/paris", credential)
        assert isinstance(d, Problem) and d.status == 403
        assert problem(d)["type"].endswith("/credential-used")
        assert www_authenticate(d) == []

    with_harness(body)


def test_second_credential_for_one_challenge_is_a_replay() -> None:
    async def body(h: Harness) -> None:
        d = await h.challenge(h.request(FORECAST, "/api/v1/forecast/paris"))
        first = pay_challenge(www_authenticate(d))
        second = pay_challenge(www_authenticate(d))  # new nonce, same challenge
        auth = await present(h, FORECAST, "/api/v1/forecast/paris", first)
        assert isinstance(auth, Authorization)
        await auth.delivered()
        denied = await present(h, FORECAST, "/api/v1/forecast/paris", second)
        assert isinstance(denied, Problem) and denied.status == 403
        assert problem(denied)["type"].endswith("/verification-failed")
        assert (
            await h.store.get_payment(hashlib.sha256(second.split(" ", 1)[1].encode()).hexdigest())
            is None
        )

    with_harness(body)


# ---------------------------------------------------------------------------- refusals (402/400)


def test_credential_for_route_a_on_route_b_is_402_even_at_same_price() -> None:
    async def body(h: Harness) -> None:
        credential = await pay(h, FORECAST, "/api/v1/forecast/paris")
        d = await present(h, CHAT, "/api/v1/chat", credential)
        doc = problem(d)
        assert isinstance(d, Problem) and d.status == 402
        assert doc["type"].endswith("/invalid-challenge")
        assert "GET /api/v1/forecast/paris" in doc["detail"]
        assert len(www_authenticate(d)) == 1
        # another city, another query: also another request
        for path, query in (("/api/v1/forecast/rome", ""), ("/api/v1/forecast/paris", "x=1")):
            d = await present(h, FORECAST, path, credential, query=query)
            assert isinstance(d, Problem) and d.status == 402
        # nothing was spent: the credential still works where it belongs
        auth = await present(h, FORECAST, "/api/v1/forecast/paris", credential)
        assert isinstance(auth, Authorization)

    with_harness(body)


def test_tampered_credential_is_402_invalid_challenge() -> None:
    async def body(h: Harness) -> None:
        credential = await pay(h, FORECAST, "/api/v1/forecast/paris")

        def cheaper(doc: dict[str, Any]) -> None:
            req = doc["challenge"]["request"]
            decoded = json.loads(base64.urlsafe_b64decode(req + "=" * (-len(req) % 4)))
            decoded["amount"] = "1"
            raw = json.dumps(decoded, separators=(",", ":"), sort_keys=True).encode()
            doc["challenge"]["request"] = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

        def later(doc: dict[str, Any]) -> None:
            doc["challenge"]["expires"] = "2099-01-01T00:00:00Z"

        for change in (cheaper, later):
            d = await present(h, FORECAST, "/api/v1/forecast/paris", reencode(credential, change))
            doc = problem(d)
            assert isinstance(d, Problem) and d.status == 402
            assert doc["type"].endswith("/invalid-challenge"), doc
            assert www_authenticate(d)

    with_harness(body)


def test_expired_challenge_is_402_payment_expired() -> None:
    async def body(h: Harness) -> None:
        credential = await pay(h, FORECAST, "/api/v1/forecast/paris")
        await asyncio.sleep(1.1)
        d = await present(h, FORECAST, "/api/v1/forecast/paris", credential)
        doc = problem(d)
        assert isinstance(d, Problem) and d.status == 402
        assert doc["type"].endswith("/payment-expired")
        assert www_authenticate(d)

    with_harness(body, config(challenge_ttl=0.5))


def test_malformed_credentials_are_402_malformed() -> None:
    async def body(h: Harness) -> None:
        for bad in ("Payment !!!notbase64", "Payment e30", "Payment " + "A" * 70000):
            d = await present(h, FORECAST, "/api/v1/forecast/paris", bad)
            doc = problem(d)
            assert isinstance(d, Problem) and d.status == 402, bad[:20]
            assert doc["type"].endswith("/malformed-credential"), doc
            assert www_authenticate(d)

    with_harness(body)


def test_bad_payload_is_402() -> None:
    async def body(h: Harness) -> None:
        credential = await pay(h, FORECAST, "/api/v1/forecast/paris")

        def junk(doc: dict[str, Any]) -> None:
            doc["payload"] = {"unexpected": 1}

        d = await present(h, FORECAST, "/api/v1/forecast/paris", reencode(credential, junk))
        assert isinstance(d, Problem) and d.status == 402
        assert problem(d)["type"].endswith("/invalid-payload")

    with_harness(body)


def test_unsupported_method_is_400() -> None:
    async def body(h: Harness) -> None:
        credential = await pay(h, FORECAST, "/api/v1/forecast/paris")

        def other(doc: dict[str, Any]) -> None:
            doc["challenge"]["method"] = "lightning"

        d = await present(h, FORECAST, "/api/v1/forecast/paris", reencode(credential, other))
        doc = problem(d)
        assert isinstance(d, Problem) and d.status == 400
        assert doc["type"] == "https://paymentauth.org/problems/method-unsupported"
        assert "lightning/charge" in doc["detail"]

    with_harness(body)


def test_credential_from_another_server_is_402() -> None:
    async def body(h: Harness) -> None:
        other = config(secret_key=Secret("another-secret-xyz"))
        from payment_harness import harness

        async with harness(other) as h2:
            credential = await pay(h2, FORECAST, "/api/v1/forecast/paris")
        d = await present(h, FORECAST, "/api/v1/forecast/paris", credential)
        assert isinstance(d, Problem) and d.status == 402
        assert problem(d)["type"].endswith("/invalid-challenge")

    with_harness(body)


def test_price_change_makes_old_credentials_402() -> None:
    async def body(h: Harness) -> None:
        credential = await pay(h, FORECAST, "/api/v1/forecast/paris")
        from payment_harness import harness

        dearer = config(paid("GET", "/v1/forecast/:city", "0.10", "play"))
        async with harness(dearer, h.store) as h2:
            d = await present(h2, FORECAST, "/api/v1/forecast/paris", credential)
            doc = problem(d)
            assert isinstance(d, Problem) and d.status == 402
            assert "other terms" in doc["detail"]

    with_harness(body)


# ---------------------------------------------------------------------------- concurrency


def test_twenty_concurrent_presentations_one_authorization_rest_409() -> None:
    async def body(h: Harness) -> None:
        credential = await pay(h, FORECAST, "/api/v1/forecast/paris")
        results = await asyncio.gather(
            *(present(h, FORECAST, "/api/v1/forecast/paris", credential) for _ in range(20))
        )
        auths = [r for r in results if isinstance(r, Authorization)]
        denials = [r for r in results if isinstance(r, Problem)]
        assert len(auths) == 1
        assert {d.status for d in denials} == {409}
        assert problem(denials[0])["type"].endswith("/payment-in-progress")
        await auths[0].delivered()

    with_harness(body)


# ---------------------------------------------------------------------------- credits


def test_credit_then_retry_proceeds_without_paying_again_then_delivered() -> None:
    async def body(h: Harness) -> None:
        credential, auth = await pay_and_present(h)
        first_reference = auth.reference
        p = await auth.undelivered(undelivered("upstream-status", 503, b'{"error":"overloaded"}'))
        assert p.status == 503
        doc = json.loads(p.body)
        assert doc["type"] == "https://mpp-proxy.dev/problems/payment-credited"
        assert doc["upstreamStatus"] == 503
        assert doc["upstreamBody"] == '{"error":"overloaded"}'
        assert doc["credit"]["reference"] == first_reference
        assert "same credential" in doc["detail"] and doc["credit"]["until"] in doc["detail"]
        assert (b"cache-control", b"no-store") in p.headers
        assert not any(k == b"payment-receipt" for k, _ in p.headers)
        row = await h.store.get_payment(auth.payment.key)
        assert row is not None and row.status is PaymentStatus.CREDITED
        assert row.credit_until > time.time() + 3000

        again = await present(h, FORECAST, "/api/v1/forecast/paris", credential)
        assert isinstance(again, Authorization) and again.redeemed
        assert again.reference == first_reference
        receipt = Receipt.from_payment_receipt(header(again, "payment-receipt") or "")
        assert receipt.reference == first_reference
        # while the retry is in flight, a third presentation waits its turn
        busy = await present(h, FORECAST, "/api/v1/forecast/paris", credential)
        assert isinstance(busy, Problem) and busy.status == 409
        await again.delivered()
        row = await h.store.get_payment(auth.payment.key)
        assert row is not None and row.status is PaymentStatus.DELIVERED and row.attempts == 2
        assert len(await h.store.list_payments()) == 1
        d = await present(h, FORECAST, "/api/v1/forecast/paris", credential)
        assert isinstance(d, Problem) and d.status == 403

    with_harness(body)


def test_credit_status_rule() -> None:
    async def body(h: Harness) -> None:
        cases = [
            (("upstream-timeout", None, b""), 504),
            (("upstream-unreachable", None, b""), 502),
            (("bad-request", None, b""), 400),
            (("upstream-status", 404, b"nope"), 404),
            (("upstream-status", 302, b""), 502),
        ]
        for args, status in cases:
            _credential, auth = await pay_and_present(h)
            p = await auth.undelivered(undelivered(*args))
            assert p.status == status, args

    with_harness(body)


def test_credit_body_leaves_out_binary_or_large_upstream_bodies_and_scrubs_keys() -> None:
    async def body(h: Harness) -> None:
        for upstream, shown in (
            (b"\x00\x01binary", None),
            (b"x" * (64 * 1024 + 1), None),
            (f"bad key {UPSTREAM_KEY}".encode(), "bad key ***"),
        ):
            _credential, auth = await pay_and_present(h)
            doc = json.loads(
                (await auth.undelivered(undelivered("upstream-status", 500, upstream))).body
            )
            assert doc.get("upstreamBody") == shown

    with_harness(body)


def test_credit_on_another_route_is_402() -> None:
    async def body(h: Harness) -> None:
        credential, auth = await pay_and_present(h)
        await auth.undelivered(undelivered("upstream-unreachable"))
        d = await present(h, CHAT, "/api/v1/chat", credential)
        assert isinstance(d, Problem) and d.status == 402
        assert "GET /api/v1/forecast/paris" in problem(d)["detail"]
        row = await h.store.get_payment(auth.payment.key)
        assert row is not None and row.status is PaymentStatus.CREDITED

    with_harness(body)


def test_retry_after_credit_ttl_is_403_forfeited() -> None:
    async def body(h: Harness) -> None:
        credential, auth = await pay_and_present(h)
        await auth.undelivered(undelivered("upstream-timeout"))
        await asyncio.sleep(0.4)
        d = await present(h, FORECAST, "/api/v1/forecast/paris", credential)
        doc = problem(d)
        assert isinstance(d, Problem) and d.status == 403
        assert doc["type"].endswith("/credit-forfeited")
        assert "expired" in doc["detail"]
        row = await h.store.get_payment(auth.payment.key)
        assert row is not None and row.status is PaymentStatus.FORFEITED
        d = await present(h, FORECAST, "/api/v1/forecast/paris", credential)
        assert isinstance(d, Problem) and d.status == 403

    with_harness(body, config(credit_ttl=0.2))


def test_background_sweep_forfeits_unclaimed_credits() -> None:
    async def body(h: Harness) -> None:
        _credential, auth = await pay_and_present(h)
        await auth.undelivered(undelivered("upstream-timeout"))
        for _ in range(100):
            row = await h.store.get_payment(auth.payment.key)
            assert row is not None
            if row.status is PaymentStatus.FORFEITED:
                break
            await asyncio.sleep(0.05)
        assert row.status is PaymentStatus.FORFEITED

    with_harness(body, config(credit_ttl=0.2, lease_seconds=0.3))


# ---------------------------------------------------------------------------- leases


def _abandoned(row: Payment, **changes: Any) -> Payment:
    return replace(row, owner="dead-process", lease_until=time.time() - 1, **changes)


def test_expired_lease_of_a_dead_owner_is_taken_over_as_a_credit() -> None:
    async def body(h: Harness) -> None:
        credential, auth = await pay_and_present(h)
        row = await h.store.get_payment(auth.payment.key)
        assert row is not None
        # Simulate kill -9 of the owner: the same row, claimed by a process whose lease ran out.
        await h.store.delete_payment(row.key, expect_owner=h.gate.owner)
        assert await h.store.insert_payment(_abandoned(row)) is None
        taken = await present(h, FORECAST, "/api/v1/forecast/paris", credential)
        assert isinstance(taken, Authorization), getattr(taken, "body", taken)
        assert taken.redeemed and taken.reference == row.reference
        await taken.delivered()
        final = await h.store.get_payment(row.key)
        assert final is not None and final.status is PaymentStatus.DELIVERED
        assert final.owner == h.gate.owner and final.attempts == 2

    with_harness(body)


def test_live_lease_of_another_process_is_409() -> None:
    async def body(h: Harness) -> None:
        credential, auth = await pay_and_present(h)
        row = await h.store.get_payment(auth.payment.key)
        assert row is not None
        await h.store.delete_payment(row.key, expect_owner=h.gate.owner)
        live = replace(row, owner="other-process", lease_until=time.time() + 60)
        assert await h.store.insert_payment(live) is None
        d = await present(h, FORECAST, "/api/v1/forecast/paris", credential)
        assert isinstance(d, Problem) and d.status == 409

    with_harness(body)


def test_outcome_of_a_lost_lease_does_not_overwrite_the_new_holder() -> None:
    async def body(h: Harness) -> None:
        _credential, auth = await pay_and_present(h)
        # This process stalled past its lease and another one took the claim over.
        taken = await h.store.transition(
            auth.payment.key,
            expect=(PaymentStatus.IN_FLIGHT,),
            status=PaymentStatus.IN_FLIGHT,
            owner="other-process",
            lease_until=time.time() + 60,
        )
        assert taken is not None
        await auth.delivered()
        row = await h.store.get_payment(auth.payment.key)
        assert row is not None and row.status is PaymentStatus.IN_FLIGHT
        assert row.owner == "other-process"

    with_harness(body)


def test_claim_without_settlement_record_is_settled_again() -> None:
    async def body(h: Harness) -> None:
        d = await h.challenge(h.request(FORECAST, "/api/v1/forecast/paris"))
        credential = pay_challenge(www_authenticate(d))
        c = Credential.from_authorization(credential)
        key = hashlib.sha256(credential.split(" ", 1)[1].encode()).hexdigest()
        now = time.time()
        # The process died between inserting its claim and recording pympp's settlement.
        row = Payment(
            key=key,
            challenge_id=c.challenge.id,
            method="play",
            kind="test",
            reference="",
            amount="5",
            currency="TEST",
            service="api",
            route=FORECAST,
            scope="GET /api/v1/forecast/paris",
            payer="",
            status=PaymentStatus.IN_FLIGHT,
            owner="dead",
            lease_until=now - 1,
            credit_until=0.0,
            attempts=1,
            created_at=now,
            updated_at=now,
        )
        assert await h.store.insert_payment(row) is None
        auth = await present(h, FORECAST, "/api/v1/forecast/paris", credential)
        assert isinstance(auth, Authorization), getattr(auth, "body", auth)
        assert auth.reference.startswith("test_")
        await auth.delivered()

    with_harness(body)


def test_leases_are_renewed_while_in_flight() -> None:
    async def body(h: Harness) -> None:
        _credential, auth = await pay_and_present(h)
        first = auth.payment.lease_until
        await asyncio.sleep(0.5)
        row = await h.store.get_payment(auth.payment.key)
        assert row is not None and row.lease_until > first
        assert row.status is PaymentStatus.IN_FLIGHT
        await auth.delivered()

    with_harness(body, config(lease_seconds=0.3))


def test_start_sweeps_abandoned_rows_into_credits() -> None:
    from payment_harness import harness

    async def body(h: Harness) -> None:
        credential, auth = await pay_and_present(h)
        row = await h.store.get_payment(auth.payment.key)
        assert row is not None
        await h.store.delete_payment(row.key, expect_owner=h.gate.owner)
        await h.store.insert_payment(_abandoned(row))
        async with harness(config(), h.store) as restarted:
            swept = await restarted.store.get_payment(row.key)
            assert swept is not None and swept.status is PaymentStatus.CREDITED
            again = await present(restarted, FORECAST, "/api/v1/forecast/paris", credential)
            assert isinstance(again, Authorization) and again.redeemed

    with_harness(body)


# ---------------------------------------------------------------------------- failures, secrets


class BrokenStore:
    """A store whose ledger is down (the pympp KV half still works)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def get_payment(self, key: str) -> Any:
        raise ConnectionError(f"ledger down; password={SECRET}")

    async def insert_payment(self, payment: Any) -> Any:
        raise ConnectionError(f"ledger down; password={SECRET}")


def test_backend_failure_is_500_without_details() -> None:
    from mpp_proxy.payments import PaymentGate
    from mpp_proxy.state import open_store

    async def main() -> None:
        store = open_store("memory://")
        await store.open()
        gate = PaymentGate(config(), BrokenStore(store))  # type: ignore[arg-type]
        svc = gate.config.services[0]
        route = svc.routes[0]
        from mpp_proxy.payments import PaidRequest

        offers = gate.offers_for(svc, route)
        d = await gate.authorize(PaidRequest.of(offers, "GET", "/api/v1/forecast/x", "", []))
        assert isinstance(d, Problem) and d.status == 402
        challenge = www_authenticate(d)
        credential = pay_challenge(challenge)
        d = await gate.authorize(
            PaidRequest.of(
                offers,
                "GET",
                "/api/v1/forecast/x",
                "",
                [(b"authorization", credential.encode())],
            )
        )
        doc = problem(d)
        assert isinstance(d, Problem) and d.status == 500
        assert doc["type"] == "https://paymentauth.org/problems/internal-payment-error"
        assert SECRET not in d.body.decode() and "Traceback" not in d.body.decode()

    asyncio.run(main())


def test_secret_never_appears_in_any_response() -> None:
    async def body(h: Harness) -> None:
        seen: list[bytes] = []
        d = await h.challenge(h.request(FORECAST, "/api/v1/forecast/paris"))
        seen += [d.body, *(v for _, v in d.headers)]
        credential = pay_challenge(www_authenticate(d))
        for bad in (credential[:-3], "Payment x", credential):
            r = await present(h, FORECAST, "/api/v1/forecast/paris", bad)
            if isinstance(r, Problem):
                seen += [r.body, *(v for _, v in r.headers)]
            else:
                seen += [v for _, v in r.receipt_headers]
                seen.append(
                    (
                        await r.undelivered(
                            undelivered("upstream-status", 500, UPSTREAM_KEY.encode())
                        )
                    ).body
                )
        blob = b"\n".join(seen)
        assert SECRET.encode() not in blob
        assert UPSTREAM_KEY.encode() not in blob
        assert SECRET not in repr(h.gate.config)

    with_harness(body)


def test_test_money_needs_allow_test_payments() -> None:
    from mpp_proxy.config.errors import ConfigError
    from mpp_proxy.payments import PaymentGate
    from mpp_proxy.state import open_store

    try:
        PaymentGate(config(allow_test_payments=False), open_store("memory://"))
    except ConfigError as exc:
        assert "allow_test_payments" in str(exc)
    else:
        raise AssertionError("test money was accepted without allow_test_payments")


def test_underpayment_is_402_payment_insufficient_and_spends_nothing() -> None:
    async def body(h: Harness) -> None:
        d = await h.challenge(h.request(FORECAST, "/api/v1/forecast/paris"))
        short = pay_challenge(www_authenticate(d), amount="4")
        r = await present(h, FORECAST, "/api/v1/forecast/paris", short)
        doc = problem(r)
        assert isinstance(r, Problem) and r.status == 402
        assert doc["type"] == "https://paymentauth.org/problems/payment-insufficient"
        assert "4 of 5" in doc["detail"]
        assert www_authenticate(r)
        assert await h.store.list_payments() == []
        # the same challenge can still be paid in full
        full = pay_challenge(www_authenticate(d))
        assert isinstance(await present(h, FORECAST, "/api/v1/forecast/paris", full), Authorization)

    with_harness(body)


def test_a_re_encoded_copy_of_a_delivered_credential_is_refused() -> None:
    async def body(h: Harness) -> None:
        credential, auth = await pay_and_present(h)
        await auth.delivered()

        token = credential.split(" ", 1)[1]
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        spaced = json.dumps(data, indent=2).encode()
        for copy in (
            "Payment " + base64.urlsafe_b64encode(spaced).rstrip(b"=").decode(),
            "Payment " + base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode(),
        ):
            assert copy != credential
            d = await present(h, FORECAST, "/api/v1/forecast/paris", copy)
            assert isinstance(d, Problem) and d.status == 403, d
        rows = await h.store.list_payments()
        assert [r.status for r in rows] == [PaymentStatus.DELIVERED]

    with_harness(body)


# ---------------------------------------------------------------------------- cancellation


class SlowReplyStore(MemoryStore):
    """A memory store whose chosen ledger call writes, then holds its answer back.

    Like a SQLite commit made by the store thread (or a Redis script that ran) while the
    request awaiting it is cancelled: the write happened, the caller never learns it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.hold: str = ""
        self.written = asyncio.Event()
        self.reply = asyncio.Event()

    async def _held(self, name: str, result: Any) -> Any:
        if self.hold == name:
            self.hold = ""
            self.written.set()
            await self.reply.wait()
        return result

    async def insert_payment(self, payment: Payment) -> Payment | None:
        return await self._held("insert_payment", await super().insert_payment(payment))

    async def transition(self, key: str, **kw: Any) -> Payment | None:
        return await self._held("transition", await super().transition(key, **kw))


async def _cancel_when_written(store: SlowReplyStore, call: str, coro: Any) -> None:
    store.hold = call
    task = asyncio.ensure_future(coro)
    await asyncio.wait_for(store.written.wait(), 5)
    task.cancel()
    store.reply.set()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def test_request_cancelled_while_redeeming_a_credit_keeps_the_credit() -> None:
    async def main() -> None:
        store = SlowReplyStore()
        async with harness(config(), store) as h:
            credential, auth = await pay_and_present(h)
            await auth.undelivered(undelivered("upstream-timeout"))
            # The claim credited -> in_flight commits, the client goes away before the answer.
            await _cancel_when_written(
                store, "transition", present(h, FORECAST, "/api/v1/forecast/paris", credential)
            )
            await asyncio.sleep(0.05)
            again = await present(h, FORECAST, "/api/v1/forecast/paris", credential)
            assert isinstance(again, Authorization), getattr(again, "body", again)
            assert again.redeemed and again.reference == auth.reference
            await again.delivered()

    asyncio.run(main())


def test_request_cancelled_after_its_claim_was_written_still_settles_into_a_credit() -> None:
    async def main() -> None:
        store = SlowReplyStore()
        async with harness(config(), store) as h:
            credential = await pay(h, FORECAST, "/api/v1/forecast/paris")
            await _cancel_when_written(
                store,
                "insert_payment",
                present(h, FORECAST, "/api/v1/forecast/paris", credential),
            )
            await asyncio.sleep(0.05)
            again = await present(h, FORECAST, "/api/v1/forecast/paris", credential)
            assert isinstance(again, Authorization), getattr(again, "body", again)
            assert again.redeemed and again.reference.startswith("test_")
            await again.delivered()
            rows = await h.store.list_payments()
            assert [(r.status, r.attempts) for r in rows] == [(PaymentStatus.DELIVERED, 2)]

    asyncio.run(main())


def test_credit_cancelled_before_its_write_is_still_recorded() -> None:
    async def main() -> None:
        store = SlowReplyStore()
        async with harness(config(lease_seconds=0.3), store) as h:
            _credential, auth = await pay_and_present(h)
            # The write never happens: the call is cancelled before it reaches the store.
            blocked = asyncio.Event()
            real = store.transition

            async def never(key: str, **kw: Any) -> Payment | None:
                store.transition = real  # type: ignore[method-assign]
                blocked.set()
                await asyncio.Event().wait()
                raise AssertionError("unreachable")

            store.transition = never  # type: ignore[method-assign]
            task = asyncio.ensure_future(auth.undelivered(undelivered("client-disconnected")))
            await blocked.wait()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            for _ in range(100):
                row = await h.store.get_payment(auth.payment.key)
                assert row is not None
                if row.status is PaymentStatus.CREDITED:
                    break
                await asyncio.sleep(0.02)
            assert row.status is PaymentStatus.CREDITED

    asyncio.run(main())


def test_credit_whose_answer_was_lost_is_not_redeemed_twice_at_once() -> None:
    async def main() -> None:
        store = SlowReplyStore()
        async with harness(config(lease_seconds=0.3), store) as h:
            credential, auth = await pay_and_present(h)
            # The credit is written but its answer is lost; the client retries at once.
            await _cancel_when_written(
                store, "transition", auth.undelivered(undelivered("client-disconnected"))
            )
            serving: list[Authorization] = []
            for _ in range(30):
                r = await present(h, FORECAST, "/api/v1/forecast/paris", credential)
                if isinstance(r, Authorization):
                    serving.append(r)
                else:
                    assert r.status == 409, r.body
                await asyncio.sleep(0.02)
            assert len(serving) <= 1
            for r in serving:
                await r.delivered()

    asyncio.run(main())
