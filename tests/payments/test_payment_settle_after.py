"""Settling after the upstream answered, at the gate: validate, hold, then settle or release."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from mpp import Receipt
from payment_harness import (
    Harness,
    config,
    harness,
    header,
    paid,
    undelivered,
    with_harness,
)
from test_payment_gate import FORECAST, pay, present, problem, reencode

from mpp_proxy.config.model import Route
from mpp_proxy.payments import Authorization
from mpp_proxy.problems import Problem
from mpp_proxy.state import PaymentStatus
from mpp_proxy.state.memory import MemoryStore

PARIS = "/api/v1/forecast/paris"


def after_config(**proxy: Any) -> Any:
    return config(
        paid("GET", "/v1/forecast/:city", "0.05", "play", settle="after"),
        Route("GET", "/v1/free"),
        **proxy,
    )


async def presented(h: Harness, credential: str) -> Authorization:
    auth = await present(h, FORECAST, PARIS, credential)
    assert isinstance(auth, Authorization), getattr(auth, "body", auth)
    return auth


def claims(h: Harness) -> list[str]:
    store = h.store
    assert isinstance(store, MemoryStore)
    return [k for k in store._kv if k.startswith("mpp-proxy:test-money:")]


def test_a_validated_credential_is_pending_and_settles_on_the_success_head() -> None:
    async def body(h: Harness) -> None:
        auth = await presented(h, await pay(h, FORECAST, PARIS))
        assert not auth.settled and auth.receipt_headers == ()
        row = await h.store.get_payment(auth.payment.key)
        assert row is not None and (row.status, row.reference) == (PaymentStatus.PENDING, "")
        assert claims(h) == []  # nothing settled yet
        assert await auth.settle() is None
        assert auth.settled and auth.reference.startswith("test_")
        receipt = Receipt.from_payment_receipt(header(auth, "payment-receipt") or "")
        assert receipt.reference == auth.reference
        row = await h.store.get_payment(auth.payment.key)
        assert row is not None and (row.status, row.reference) == (
            PaymentStatus.IN_FLIGHT,
            auth.reference,
        )
        assert len(claims(h)) == 1
        await auth.delivered()
        row = await h.store.get_payment(auth.payment.key)
        assert row is not None and row.status is PaymentStatus.DELIVERED

    with_harness(body, after_config())


def test_an_upstream_failure_before_settlement_charges_nothing_and_the_credential_works_again() -> (
    None
):
    async def body(h: Harness) -> None:
        credential = await pay(h, FORECAST, PARIS)
        auth = await presented(h, credential)
        p = await auth.undelivered(undelivered("upstream-status", 500, b"boom"))
        doc = problem(p)
        assert p.status == 500
        assert doc["type"].endswith("/payment-not-charged")
        assert doc["upstreamStatus"] == 500 and "nothing was charged" in doc["detail"]
        assert doc["credential"]["validUntil"] in doc["detail"]
        assert not any(k == b"payment-receipt" for k, _ in p.headers)
        row = await h.store.get_payment(auth.payment.key)
        assert row is not None and (row.status, row.owner) == (PaymentStatus.RELEASED, "")
        assert claims(h) == []
        # The same credential is served again, and settles this time.
        again = await presented(h, credential)
        assert not again.redeemed and not again.settled
        assert await again.settle() is None
        await again.delivered()
        row = await h.store.get_payment(auth.payment.key)
        assert row is not None and (row.status, row.attempts) == (PaymentStatus.DELIVERED, 2)
        assert len(claims(h)) == 1
        used = await present(h, FORECAST, PARIS, credential)
        assert isinstance(used, Problem) and used.status == 403

    with_harness(body, after_config())


def test_concurrent_presentations_of_a_pending_credential_one_proceeds_rest_409() -> None:
    async def body(h: Harness) -> None:
        credential = await pay(h, FORECAST, PARIS)
        results = await asyncio.gather(
            *(present(h, FORECAST, PARIS, credential) for _ in range(20))
        )
        auths = [r for r in results if isinstance(r, Authorization)]
        assert len(auths) == 1
        assert {r.status for r in results if isinstance(r, Problem)} == {409}
        # A re-encoded copy (another ledger row) waits too: the challenge is held.
        copy = reencode(credential, lambda doc: doc["payload"].update(nonce="other"))
        busy = await present(h, FORECAST, PARIS, copy)
        assert isinstance(busy, Problem) and busy.status == 409
        assert await auths[0].settle() is None
        await auths[0].delivered()
        used = await present(h, FORECAST, PARIS, copy)
        assert isinstance(used, Problem) and used.status == 403

    with_harness(body, after_config())


def test_a_refused_settlement_is_402_with_fresh_challenges_and_settle_failed() -> None:
    async def body(h: Harness) -> None:
        credential = await pay(h, FORECAST, PARIS)
        auth = await presented(h, credential)
        # Someone settles the same challenge first (here: by hand in the replay store).
        assert await h.store.put_if_absent(
            "mpp-proxy:test-money:" + auth.payment.challenge_id, "test_elsewhere"
        )
        refused = await auth.settle()
        assert isinstance(refused, Problem) and refused.status == 402
        doc = problem(refused)
        assert "settling the payment was refused" in doc["detail"]
        assert "nothing was charged" in doc["detail"].lower()
        assert header(refused, "www-authenticate") is not None
        row = await h.store.get_payment(auth.payment.key)
        assert row is not None and (row.status, row.owner) == (PaymentStatus.SETTLE_FAILED, "")
        again = await present(h, FORECAST, PARIS, credential)
        assert isinstance(again, Problem) and again.status == 402
        assert header(again, "www-authenticate") is not None

    with_harness(body, after_config())


def test_a_backend_failure_while_settling_keeps_the_payment_for_the_same_credential() -> None:
    class Failing(MemoryStore):
        fail = False

        async def put_if_absent(self, key: str, value: Any) -> bool:
            if self.fail and key.startswith("mpp-proxy:test-money:"):
                raise ConnectionError("store went away mid-settlement")
            return await super().put_if_absent(key, value)

    async def body() -> None:
        store = Failing()
        async with harness(after_config(), store=store) as h:
            credential = await pay(h, FORECAST, PARIS)
            auth = await presented(h, credential)
            store.fail = True
            failed = await auth.settle()
            assert isinstance(failed, Problem) and failed.status == 500
            row = await h.store.get_payment(auth.payment.key)
            assert row is not None and row.status is PaymentStatus.CREDITED
            store.fail = False
            # The retry settles it (the outcome was unknown: pympp's replay store decides).
            again = await presented(h, credential)
            assert again.settled and again.reference.startswith("test_")
            await again.delivered()

    asyncio.run(body())


def test_a_dead_pending_claim_is_released_by_the_sweep_and_served_again() -> None:
    async def body(h: Harness) -> None:
        credential = await pay(h, FORECAST, PARIS)
        auth = await presented(h, credential)
        store = h.store
        assert isinstance(store, MemoryStore)
        row = store._payments[auth.payment.key]
        from dataclasses import replace

        store._payments[row.key] = replace(row, owner="dead-process", lease_until=time.time() - 1)
        await h.gate.ledger.sweep()
        swept = await store.get_payment(row.key)
        assert swept is not None and (swept.status, swept.owner) == (PaymentStatus.RELEASED, "")
        again = await presented(h, credential)
        assert await again.settle() is None
        await again.delivered()

    with_harness(body, after_config())


def test_an_expired_challenge_is_not_served_again_after_a_release() -> None:
    async def body(h: Harness) -> None:
        credential = await pay(h, FORECAST, PARIS)
        auth = await presented(h, credential)
        await auth.undelivered(undelivered("upstream-timeout"))
        await asyncio.sleep(1.1)
        late = await present(h, FORECAST, PARIS, credential)
        assert isinstance(late, Problem) and late.status == 402
        assert json.loads(late.body)["type"].endswith("/payment-expired")

    with_harness(body, after_config(challenge_ttl=1.0))


def test_a_cancelled_settlement_that_settles_is_kept_as_a_credit() -> None:
    class Slow(MemoryStore):
        gate: asyncio.Event | None = None

        async def put_if_absent(self, key: str, value: Any) -> bool:
            if self.gate is not None and key.startswith("mpp-proxy:test-money:"):
                await self.gate.wait()
            return await super().put_if_absent(key, value)

    async def body() -> None:
        store = Slow()
        async with harness(after_config(), store=store) as h:
            auth = await presented(h, await pay(h, FORECAST, PARIS))
            store.gate = asyncio.Event()
            task = asyncio.ensure_future(auth.settle())
            await asyncio.sleep(0.05)
            task.cancel()  # the client left while the payment was settling
            store.gate.set()
            for _ in range(100):
                row = await store.get_payment(auth.payment.key)
                if row is not None and row.status is PaymentStatus.CREDITED:
                    break
                await asyncio.sleep(0.02)
            assert row is not None and row.status is PaymentStatus.CREDITED
            assert row.reference.startswith("test_")

    asyncio.run(body())
