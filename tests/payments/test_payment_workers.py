"""Two gates on one SQLite file, as two granian workers: exactly once across processes' claims."""

from __future__ import annotations

import asyncio
from pathlib import Path

from payment_harness import Harness, config, harness, undelivered, www_authenticate

from mpp_proxy.client.testmoney import pay_challenge
from mpp_proxy.payments import Authorization
from mpp_proxy.problems import Problem
from mpp_proxy.state import PaymentStatus, open_store

FORECAST = "GET /v1/forecast/:city"
PATH = "/api/v1/forecast/paris"


async def present(h: Harness, credential: str) -> Authorization | Problem:
    return await h.authorize(h.request(FORECAST, PATH, headers=[("Authorization", credential)]))


def test_concurrent_presentations_on_two_workers_authorize_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"

    async def main() -> None:
        async with (
            harness(config(), open_store(url), owner="worker-a") as a,
            harness(config(), open_store(url), owner="worker-b") as b,
        ):
            assert a.gate.owner != b.gate.owner
            d = await a.challenge(a.request(FORECAST, PATH))
            credential = pay_challenge(www_authenticate(d))
            results = await asyncio.gather(
                *(present(a if i % 2 else b, credential) for i in range(20))
            )
            auths = [r for r in results if isinstance(r, Authorization)]
            assert len(auths) == 1
            assert {r.status for r in results if isinstance(r, Problem)} == {409}
            # the failed attempt becomes a credit that the other worker redeems
            winner = auths[0]
            await winner.undelivered(undelivered("upstream-unreachable"))
            other = b if winner.payment.owner == a.gate.owner else a
            again = await present(other, credential)
            assert isinstance(again, Authorization) and again.redeemed
            await again.delivered()
            row = await other.store.get_payment(winner.payment.key)
            assert row is not None and row.status is PaymentStatus.DELIVERED
            assert row.attempts == 2
            assert [(t.count, t.amount) for t in await other.store.totals()] == [(1, 50000)]

    asyncio.run(main())


def test_worker_that_stops_renewing_loses_its_claim_to_the_next_presenter(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    fast = config(lease_seconds=0.3)

    async def main() -> None:
        async with harness(fast, open_store(url), owner="survivor") as survivor:
            dead_store = open_store(url)
            async with harness(fast, dead_store, owner="doomed") as doomed:
                d = await doomed.challenge(doomed.request(FORECAST, PATH))
                credential = pay_challenge(www_authenticate(d))
                auth = await present(doomed, credential)
                assert isinstance(auth, Authorization)
                # While the owner lives and renews, the credential is busy elsewhere.
                await asyncio.sleep(0.5)
                busy = await present(survivor, credential)
                assert isinstance(busy, Problem) and busy.status == 409
            # The owner is gone (its lease task stopped without finishing the request).
            await asyncio.sleep(0.5)
            taken = await present(survivor, credential)
            assert isinstance(taken, Authorization), getattr(taken, "body", taken)
            assert taken.redeemed and taken.reference == auth.reference
            await taken.delivered()
            late = await present(survivor, credential)
            assert isinstance(late, Problem) and late.status == 403

    asyncio.run(main())


def test_a_gate_replaced_on_reload_keeps_its_requests_alive() -> None:
    fast = config(lease_seconds=0.3)

    async def main() -> None:
        store = open_store("memory://")
        async with harness(fast, store) as old:
            d = await old.challenge(old.request(FORECAST, PATH))
            credential = pay_challenge(www_authenticate(d))
            auth = await present(old, credential)
            assert isinstance(auth, Authorization)
        # The old gate is closed (config reloaded); the request it authorized still streams.
        async with harness(fast, store) as new:
            assert new.gate.owner == auth.payment.owner
            await asyncio.sleep(0.7)
            busy = await present(new, credential)
            assert isinstance(busy, Problem) and busy.status == 409
            await auth.delivered()
            row = await new.store.get_payment(auth.payment.key)
            assert row is not None and row.status is PaymentStatus.DELIVERED

    asyncio.run(main())
