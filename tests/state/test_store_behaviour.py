"""One behavioural suite run against every store backend (memory, sqlite, redis)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from mpp.store import ExpiringStore
from state_support import CREDITED, DELIVERED, FORFEITED, IN_FLIGHT, RunStore, payment

from mpp_proxy.state import Payment, PaymentStatus, Store, Totals, open_store

# ------------------------------------------------------------------------------ pympp KV


def test_kv_round_trips_json_values(run_store: RunStore) -> None:
    async def body(store: Store) -> None:
        assert await store.get("missing") is None
        await store.put("a", {"tx": "0xabc", "n": [1, 2.5, None, True]})
        assert await store.get("a") == {"tx": "0xabc", "n": [1, 2.5, None, True]}
        await store.put("a", "replaced")
        assert await store.get("a") == "replaced"
        await store.put("t", (1, 2))
        assert await store.get("t") == [1, 2]

    run_store(body)


def test_kv_delete_removes_and_tolerates_missing(run_store: RunStore) -> None:
    async def body(store: Store) -> None:
        await store.put("a", 1)
        await store.delete("a")
        await store.delete("never-there")
        assert await store.get("a") is None

    run_store(body)


def test_put_if_absent_claims_once_and_keeps_first_value(run_store: RunStore) -> None:
    async def body(store: Store) -> None:
        assert await store.put_if_absent("claim", "first") is True
        assert await store.put_if_absent("claim", "second") is False
        assert await store.get("claim") == "first"
        await store.delete("claim")
        assert await store.put_if_absent("claim", "third") is True
        assert await store.get("claim") == "third"

    run_store(body)


def test_put_if_absent_refuses_an_existing_put_key(run_store: RunStore) -> None:
    async def body(store: Store) -> None:
        await store.put("k", "v")
        assert await store.put_if_absent("k", "w") is False
        assert await store.get("k") == "v"

    run_store(body)


def test_concurrent_put_if_absent_has_one_winner(run_store: RunStore) -> None:
    async def body(store: Store) -> list[bool]:
        return await asyncio.gather(*(store.put_if_absent("tx", i) for i in range(20)))

    results = run_store(body)
    assert results.count(True) == 1


def test_store_is_a_pympp_expiring_store(run_store: RunStore) -> None:
    async def body(store: Store) -> bool:
        return isinstance(store, ExpiringStore)

    assert run_store(body)


def test_put_if_absent_until_expires_then_frees_the_key(run_store: RunStore) -> None:
    async def body(store: Store) -> None:
        assert isinstance(store, ExpiringStore)
        expires_at = time.time() + 0.2
        assert await store.put_if_absent_until("marker", "raw-tx", expires_at) is True
        assert await store.put_if_absent_until("marker", "other", expires_at + 5) is False
        assert await store.put_if_absent("marker", "other") is False
        assert await store.get("marker") == "raw-tx"
        while time.time() <= expires_at + 0.01:
            await asyncio.sleep(0.02)
        assert await store.get("marker") is None
        assert await store.put_if_absent("marker", "new") is True
        assert await store.get("marker") == "new"

    run_store(body)


def test_put_if_absent_until_rejects_a_past_deadline(run_store: RunStore) -> None:
    async def body(store: Store) -> None:
        assert isinstance(store, ExpiringStore)
        with pytest.raises(ValueError):
            await store.put_if_absent_until("k", "v", time.time() - 1)
        with pytest.raises(ValueError):
            await store.put_if_absent_until("k", "v", float("inf"))
        assert await store.get("k") is None

    run_store(body)


def test_put_clears_an_expiry(run_store: RunStore) -> None:
    async def body(store: Store) -> None:
        assert isinstance(store, ExpiringStore)
        expires_at = time.time() + 0.1
        await store.put_if_absent_until("k", "temp", expires_at)
        await store.put("k", "kept")
        while time.time() <= expires_at + 0.01:
            await asyncio.sleep(0.02)
        assert await store.get("k") == "kept"

    run_store(body)


def test_kv_rejects_values_that_are_not_json(run_store: RunStore) -> None:
    async def body(store: Store) -> None:
        with pytest.raises(TypeError):
            await store.put("k", object())

    run_store(body)


# ---------------------------------------------------------------------------------- ledger


def test_ping_answers_when_open(run_store: RunStore) -> None:
    async def body(store: Store) -> bool:
        return await store.ping()

    assert run_store(body) is True


def test_insert_then_get_returns_the_same_row(run_store: RunStore) -> None:
    row = payment("k1", amount=str(10**30), scope="GET /svc/a?x=1&y=é")

    async def body(store: Store) -> None:
        assert await store.get_payment("k1") is None
        assert await store.insert_payment(row) is None
        assert await store.get_payment("k1") == row

    run_store(body)


def test_insert_conflict_returns_existing_row_unchanged(run_store: RunStore) -> None:
    first = payment("k1", owner="worker-a")

    async def body(store: Store) -> None:
        await store.insert_payment(first)
        existing = await store.insert_payment(payment("k1", owner="worker-b", amount="5"))
        assert existing == first
        assert await store.get_payment("k1") == first

    run_store(body)


def test_opening_twice_is_harmless(run_store: RunStore) -> None:
    async def body(store: Store) -> Payment | None:
        await store.insert_payment(payment("k1"))
        await store.open()
        return await store.get_payment("k1")

    assert run_store(body) == payment("k1")


def test_transition_applies_when_status_matches(run_store: RunStore) -> None:
    async def body(store: Store) -> None:
        await store.insert_payment(payment("k1"))
        before = time.time()
        row = await store.transition(
            "k1", expect=(IN_FLIGHT,), status=DELIVERED, owner="", reference="0xfeed"
        )
        assert row is not None
        assert row.status is DELIVERED
        assert (row.owner, row.reference) == ("", "0xfeed")
        assert row.updated_at >= before
        assert row.created_at == 1000.0
        assert await store.get_payment("k1") == row

    run_store(body)


def test_transition_refuses_other_status_and_leaves_row(run_store: RunStore) -> None:
    async def body(store: Store) -> None:
        await store.insert_payment(payment("k1", status=DELIVERED, owner=""))
        assert await store.transition("k1", expect=(CREDITED,), status=IN_FLIGHT) is None
        assert await store.transition("k1", expect=(IN_FLIGHT,), status=CREDITED) is None
        assert await store.get_payment("k1") == payment("k1", status=DELIVERED, owner="")
        assert await store.transition("nope", expect=(IN_FLIGHT,), status=CREDITED) is None

    run_store(body)


def test_transition_accepts_any_of_several_expected_statuses(run_store: RunStore) -> None:
    async def body(store: Store) -> None:
        await store.insert_payment(payment("k1", status=CREDITED, owner="", credit_until=9e9))
        row = await store.transition(
            "k1", expect=(CREDITED, IN_FLIGHT), status=IN_FLIGHT, owner="w2", attempts=2
        )
        assert row is not None
        assert (row.status, row.owner, row.attempts) == (IN_FLIGHT, "w2", 2)

    run_store(body)


def test_transition_with_expect_owner_needs_that_owner(run_store: RunStore) -> None:
    async def body(store: Store) -> None:
        await store.insert_payment(payment("k1", owner="worker-a"))
        assert (
            await store.transition(
                "k1", expect=(IN_FLIGHT,), status=DELIVERED, expect_owner="worker-b"
            )
            is None
        )
        row = await store.transition(
            "k1", expect=(IN_FLIGHT,), status=DELIVERED, expect_owner="worker-a", owner=""
        )
        assert row is not None
        assert row.status is DELIVERED

    run_store(body)


def test_lease_expired_before_takes_over_only_a_dead_claim(run_store: RunStore) -> None:
    async def body(store: Store) -> None:
        await store.insert_payment(payment("k1", owner="dead", lease_until=1500.0))
        assert (
            await store.transition(
                "k1", expect=(IN_FLIGHT,), status=IN_FLIGHT, lease_expired_before=1500.0, owner="x"
            )
            is None
        )
        row = await store.transition(
            "k1",
            expect=(IN_FLIGHT,),
            status=IN_FLIGHT,
            lease_expired_before=1500.5,
            owner="alive",
            lease_until=3000.0,
        )
        assert row is not None
        assert (row.owner, row.lease_until) == ("alive", 3000.0)

    run_store(body)


def test_lease_condition_does_not_block_a_credited_row(run_store: RunStore) -> None:
    async def body(store: Store) -> None:
        await store.insert_payment(
            payment("k1", status=CREDITED, owner="", lease_until=9e9, credit_until=9e9)
        )
        row = await store.transition(
            "k1",
            expect=(CREDITED, IN_FLIGHT),
            status=IN_FLIGHT,
            lease_expired_before=100.0,
            owner="w",
        )
        assert row is not None
        assert row.owner == "w"

    run_store(body)


def test_transition_rejects_unknown_or_store_owned_fields(run_store: RunStore) -> None:
    async def body(store: Store) -> None:
        await store.insert_payment(payment("k1"))
        for bad in ({"colour": "red"}, {"key": "k2"}, {"updated_at": 1.0}, {"created_at": 1.0}):
            with pytest.raises(TypeError):
                await store.transition("k1", expect=(IN_FLIGHT,), status=DELIVERED, **bad)
        with pytest.raises(TypeError):
            await store.transition("k1", expect=(IN_FLIGHT,), status=DELIVERED, attempts="2")
        with pytest.raises(ValueError):
            await store.transition("k1", expect=(), status=DELIVERED)
        assert await store.get_payment("k1") == payment("k1")

    run_store(body)


def test_concurrent_transitions_on_one_row_have_one_winner(run_store: RunStore) -> None:
    async def body(store: Store) -> list[Payment | None]:
        await store.insert_payment(payment("k1", status=CREDITED, owner="", credit_until=9e9))
        return await asyncio.gather(
            *(
                store.transition("k1", expect=(CREDITED,), status=IN_FLIGHT, owner=f"w{i}")
                for i in range(20)
            )
        )

    results = run_store(body)
    winners = [r for r in results if r is not None]
    assert len(winners) == 1


def test_delete_payment_only_by_its_owner_while_in_flight(run_store: RunStore) -> None:
    async def body(store: Store) -> None:
        await store.insert_payment(payment("k1", owner="worker-a"))
        await store.insert_payment(payment("k2", owner="worker-a", status=DELIVERED))
        assert await store.delete_payment("k1", expect_owner="worker-b") is False
        assert await store.delete_payment("k2", expect_owner="worker-a") is False
        assert await store.delete_payment("missing", expect_owner="worker-a") is False
        assert await store.delete_payment("k1", expect_owner="worker-a") is True
        assert await store.get_payment("k1") is None
        assert [p.key for p in await store.list_payments()] == ["k2"]
        assert await store.renew_leases("worker-a", 5000.0) == 0
        # The key is free again: the same credential can be claimed afresh.
        assert await store.insert_payment(payment("k1", owner="worker-c")) is None

    run_store(body)


def test_renew_leases_extends_only_this_owners_in_flight_rows(run_store: RunStore) -> None:
    async def body(store: Store) -> None:
        await store.insert_payment(payment("a1", owner="A"))
        await store.insert_payment(payment("a2", owner="A"))
        await store.insert_payment(payment("b1", owner="B"))
        await store.insert_payment(payment("a3", owner="A", status=DELIVERED))
        # a2 is handed over to B: A must no longer renew it.
        await store.transition("a2", expect=(IN_FLIGHT,), status=IN_FLIGHT, owner="B")
        assert await store.renew_leases("A", 5000.0) == 1
        got = {p.key: p for p in await store.list_payments()}
        assert got["a1"].lease_until == 5000.0
        assert got["a2"].lease_until == 2000.0
        assert got["b1"].lease_until == 2000.0
        assert got["a3"].lease_until == 2000.0
        assert await store.renew_leases("B", 6000.0) == 2
        await store.transition("b1", expect=(IN_FLIGHT,), status=CREDITED, owner="")
        assert await store.renew_leases("B", 7000.0) == 1
        assert await store.renew_leases("nobody", 7000.0) == 0

    run_store(body)


def test_forfeit_expired_credits_only_touches_past_credits(run_store: RunStore) -> None:
    async def body(store: Store) -> None:
        await store.insert_payment(payment("old", status=CREDITED, owner="", credit_until=100.0))
        await store.insert_payment(payment("edge", status=CREDITED, owner="", credit_until=200.0))
        await store.insert_payment(payment("new", status=CREDITED, owner="", credit_until=300.0))
        await store.insert_payment(payment("live", credit_until=0.0))
        assert await store.forfeit_expired_credits(200.0) == 1
        assert await store.forfeit_expired_credits(200.0) == 0
        status = {p.key: p.status for p in await store.list_payments()}
        assert status == {"old": FORFEITED, "edge": CREDITED, "new": CREDITED, "live": IN_FLIGHT}
        # A credit redeemed before the sweep is not forfeited.
        await store.transition("edge", expect=(CREDITED,), status=IN_FLIGHT, owner="w")
        assert await store.forfeit_expired_credits(1000.0) == 1
        assert sorted(p.key for p in await store.list_payments(status=FORFEITED)) == ["new", "old"]
        # A forfeited row is final for a claim that expects a credit.
        assert await store.transition("old", expect=(CREDITED,), status=IN_FLIGHT) is None

    run_store(body)


def test_credit_abandoned_turns_dead_claims_into_credits(run_store: RunStore) -> None:
    async def body(store: Store) -> None:
        await store.insert_payment(payment("dead", owner="gone", lease_until=100.0))
        await store.insert_payment(payment("alive", owner="here", lease_until=300.0))
        await store.insert_payment(payment("done", status=DELIVERED, owner="", lease_until=1.0))
        assert await store.credit_abandoned(200.0, credit_until=5000.0) == 1
        dead = await store.get_payment("dead")
        assert dead is not None
        assert (dead.status, dead.owner, dead.credit_until) == (CREDITED, "", 5000.0)
        alive = await store.get_payment("alive")
        assert alive == payment("alive", owner="here", lease_until=300.0)
        assert await store.renew_leases("gone", 9000.0) == 0
        assert await store.credit_abandoned(200.0, credit_until=5000.0) == 0
        # The credit then follows the ordinary credit rules.
        assert await store.forfeit_expired_credits(6000.0) == 1
        assert [p.key for p in await store.list_payments(status=FORFEITED)] == ["dead"]

    run_store(body)


def test_list_payments_newest_first_with_filter_and_limit(run_store: RunStore) -> None:
    async def body(store: Store) -> None:
        await store.insert_payment(payment("p1", created_at=10.0))
        await store.insert_payment(payment("p3", created_at=30.0, status=DELIVERED))
        await store.insert_payment(payment("p2", created_at=20.0, status=DELIVERED))
        await store.insert_payment(payment("p4", created_at=20.0))
        assert [p.key for p in await store.list_payments()] == ["p3", "p4", "p2", "p1"]
        assert [p.key for p in await store.list_payments(limit=2)] == ["p3", "p4"]
        assert [p.key for p in await store.list_payments(status=DELIVERED)] == ["p3", "p2"]
        assert await store.list_payments(status=FORFEITED) == []
        assert await store.list_payments(limit=0) == []
        # Moving a row between statuses keeps it listed under its new status only.
        await store.transition("p1", expect=(IN_FLIGHT,), status=DELIVERED, owner="")
        assert [p.key for p in await store.list_payments(status=DELIVERED)] == ["p3", "p2", "p1"]
        assert [p.key for p in await store.list_payments(status=IN_FLIGHT)] == ["p4"]

    run_store(body)


def test_totals_group_delivered_revenue_exactly(run_store: RunStore) -> None:
    big = 10**24

    async def body(store: Store) -> list[Totals]:
        await store.insert_payment(payment("a", status=DELIVERED, amount=str(big)))
        await store.insert_payment(payment("b", status=DELIVERED, amount=str(big + 1)))
        await store.insert_payment(
            payment("c", status=DELIVERED, amount="250", method="card", currency="usd")
        )
        await store.insert_payment(
            payment("d", status=DELIVERED, amount="7", service="anthropic", route="POST /v1/x")
        )
        await store.insert_payment(payment("e", status=CREDITED, amount="999"))
        await store.insert_payment(payment("f", amount="999"))
        await store.insert_payment(payment("g", status=FORFEITED, amount="999"))
        return await store.totals()

    assert run_store(body) == [
        Totals("anthropic", "POST /v1/x", "usdc", "0x20c0", 1, 7),
        Totals("openai", "POST /v1/chat/completions", "card", "usd", 1, 250),
        Totals("openai", "POST /v1/chat/completions", "usdc", "0x20c0", 2, 2 * big + 1),
    ]


def test_totals_and_listing_cover_more_rows_than_one_page(run_store: RunStore) -> None:
    rows = 1201  # more than two of the Redis store's 500-row pages

    async def body(store: Store) -> tuple[list[Totals], list[Payment]]:
        await asyncio.gather(
            *(
                store.insert_payment(
                    payment(f"r{i:05d}", status=DELIVERED, amount=str(i), created_at=float(i))
                )
                for i in range(rows)
            )
        )
        return await store.totals(), await store.list_payments(limit=rows + 10)

    totals, listed = run_store(body)
    assert totals == [
        Totals("openai", "POST /v1/chat/completions", "usdc", "0x20c0", rows, sum(range(rows)))
    ]
    assert [p.key for p in listed] == [f"r{i:05d}" for i in reversed(range(rows))]


def test_totals_of_an_empty_ledger(run_store: RunStore) -> None:
    async def body(store: Store) -> list[Totals]:
        return await store.totals()

    assert run_store(body) == []


def test_rows_survive_close_and_reopen(durable_store_url: str) -> None:
    store_url = durable_store_url

    async def main() -> tuple[Payment | None, Any]:
        first = open_store(store_url)
        await first.open()
        await first.insert_payment(payment("k1"))
        await first.transition("k1", expect=(IN_FLIGHT,), status=DELIVERED, owner="")
        await first.put_if_absent("replay", "0xabc")
        await first.close()
        second = open_store(store_url)
        await second.open()
        try:
            return await second.get_payment("k1"), await second.get("replay")
        finally:
            await second.close()

    row, value = asyncio.run(main())
    assert row is not None
    assert row.status is DELIVERED
    assert value == "0xabc"


def test_calls_before_open_fail_clearly(durable_store_url: str) -> None:
    store_url = durable_store_url

    async def main() -> None:
        store = open_store(store_url)
        with pytest.raises(RuntimeError, match="open"):
            await store.get_payment("k")
        assert await store.ping() is False

    asyncio.run(main())


# ------------------------------------------------------------------------------ voids


def test_a_voided_credit_keeps_its_note_and_leaves_the_open_credits(run_store: RunStore) -> None:
    from mpp_proxy.payments.ledger import void_credit

    async def body(store: Store) -> tuple[Payment | None, Payment | None, list[Payment]]:
        await store.insert_payment(payment("v1", status=CREDITED, credit_until=time.time() + 60))
        voided = await void_credit(store, "v1", by="ops", reason="refunded")
        again = await void_credit(store, "v1", by="ops", reason="twice")
        return voided, again, await store.list_payments(status=CREDITED)

    voided, again, open_credits = run_store(body)
    assert voided is not None and voided.status is PaymentStatus.VOIDED
    assert voided.note.startswith("voided by ops at ") and voided.note.endswith(": refunded")
    assert voided.credit_until == 0.0
    assert again is None  # final: a void is not a credit any more
    assert [p.key for p in open_credits] == []


def test_a_row_without_a_note_reads_an_empty_one(run_store: RunStore) -> None:
    async def body(store: Store) -> Payment | None:
        await store.insert_payment(payment("n1"))
        return await store.get_payment("n1")

    row = run_store(body)
    assert row is not None and row.note == ""
