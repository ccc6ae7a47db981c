"""Rows of payments settled after the upstream answered, and refunds, on every backend."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from state_support import CREDITED, DELIVERED, IN_FLIGHT, RunStore, payment

from mpp_proxy.state import PaymentStatus, Store, open_store
from mpp_proxy.state.sqlite import MIGRATIONS, SCHEMA_VERSION

PENDING = PaymentStatus.PENDING
RELEASED = PaymentStatus.RELEASED
SETTLE_FAILED = PaymentStatus.SETTLE_FAILED
REFUNDED = PaymentStatus.REFUNDED


def test_a_pending_claim_is_held_renewed_and_released_by_its_owner(run_store: RunStore) -> None:
    async def body(store: Store) -> None:
        await store.insert_payment(payment("p1", status=PENDING, owner="A"))
        await store.insert_payment(payment("p2", status=PENDING, owner="A"))
        await store.insert_payment(payment("f1", owner="A"))
        # Leases of pending claims are renewed like those of in-flight ones.
        assert await store.renew_leases("A", 5000.0) == 3
        assert {p.key: p.lease_until for p in await store.list_payments()} == {
            "p1": 5000.0,
            "p2": 5000.0,
            "f1": 5000.0,
        }
        # Checked, then the upstream answered: settling makes it an in-flight row.
        moved = await store.transition("p1", expect=(PENDING,), status=IN_FLIGHT, expect_owner="A")
        assert moved is not None and moved.status is IN_FLIGHT
        # The other one's upstream failed: released, held by nobody, renewed no more.
        released = await store.transition(
            "p2", expect=(PENDING,), status=RELEASED, expect_owner="A", owner=""
        )
        assert released is not None and (released.status, released.owner) == (RELEASED, "")
        assert await store.renew_leases("A", 6000.0) == 2
        assert [p.key for p in await store.list_payments(status=RELEASED)] == ["p2"]
        # Presented again: a released row is claimed afresh by a transition.
        again = await store.transition("p2", expect=(RELEASED,), status=PENDING, owner="B")
        assert again is not None and again.owner == "B"
        assert await store.renew_leases("B", 7000.0) == 1
        # Verification failed on a pending claim: its owner may delete it.
        assert await store.delete_payment("p2", expect_owner="A") is False
        assert await store.delete_payment("p2", expect_owner="B") is True
        assert await store.renew_leases("B", 8000.0) == 0

    run_store(body)


def test_a_dead_pending_claim_is_taken_over_or_released_by_the_sweep(run_store: RunStore) -> None:
    async def body(store: Store) -> None:
        await store.insert_payment(payment("dead", status=PENDING, owner="gone", lease_until=100.0))
        await store.insert_payment(payment("live", status=PENDING, owner="here", lease_until=300.0))
        await store.insert_payment(payment("flight", owner="gone", lease_until=100.0))
        # Not taken over while the lease runs; taken over once it ran out.
        assert (
            await store.transition(
                "live", expect=(PENDING,), status=PENDING, lease_expired_before=200.0, owner="x"
            )
            is None
        )
        assert await store.release_abandoned(200.0) == 1
        dead = await store.get_payment("dead")
        assert dead is not None and (dead.status, dead.owner) == (RELEASED, "")
        # The sweep touches neither live claims nor settled in-flight ones (those are credited).
        assert [p.status for p in await store.list_payments(status=PENDING)] == [PENDING]
        flight = await store.get_payment("flight")
        assert flight is not None and flight.status is IN_FLIGHT
        assert await store.credit_abandoned(200.0, credit_until=900.0) == 1
        assert await store.release_abandoned(200.0) == 0
        taken = await store.transition(
            "live", expect=(PENDING,), status=PENDING, lease_expired_before=400.0, owner="y"
        )
        assert taken is not None and taken.owner == "y"
        assert await store.renew_leases("here", 9000.0) == 0
        assert await store.renew_leases("y", 9000.0) == 1

    run_store(body)


def test_settle_failed_and_refunded_rows_are_final_and_carry_the_refund(
    run_store: RunStore,
) -> None:
    async def body(store: Store) -> None:
        await store.insert_payment(payment("s", owner="A"))
        await store.insert_payment(payment("r", owner="A", reference="pi_1"))
        failed = await store.transition(
            "s", expect=(IN_FLIGHT,), status=SETTLE_FAILED, expect_owner="A", owner=""
        )
        assert failed is not None and failed.status is SETTLE_FAILED
        refunded = await store.transition(
            "r", expect=(IN_FLIGHT,), status=REFUNDED, expect_owner="A", owner="", refund="re_9"
        )
        assert refunded is not None and (refunded.refund, refunded.reference) == ("re_9", "pi_1")
        assert await store.get_payment("r") == refunded
        assert await store.renew_leases("A", 5000.0) == 0
        assert await store.credit_abandoned(1e12, credit_until=1e13) == 0
        for key in ("s", "r"):
            assert await store.transition(key, expect=(CREDITED,), status=IN_FLIGHT) is None
        assert [p.key for p in await store.list_payments(status=REFUNDED)] == ["r"]
        # Refunds are not revenue.
        await store.insert_payment(payment("d", status=DELIVERED, owner=""))
        [total] = await store.totals()
        assert total.count == 1

    run_store(body)


def test_a_row_inserted_with_a_refund_reads_back_whole(run_store: RunStore) -> None:
    async def body(store: Store) -> None:
        row = payment("x", status=REFUNDED, owner="", refund="re_abc")
        await store.insert_payment(row)
        assert await store.get_payment("x") == row
        assert await store.list_payments() == [row]

    run_store(body)


def test_a_version_1_sqlite_file_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL)")
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (1, 0)")
        old = payment("old", status=DELIVERED, owner="", reference="0xabc")
        # The first schema's columns: none added later (refund, note).
        values = [getattr(old, f) for f in old.__dataclass_fields__ if f not in ("refund", "note")]
        values[11] = str(values[11])
        conn.execute(f"INSERT INTO payments VALUES ({', '.join('?' * len(values))})", values)

    async def reopen() -> None:
        store = open_store(f"sqlite:///{path}")
        await store.open()
        try:
            assert await store.get_payment("old") == old
            await store.insert_payment(payment("new", status=PENDING))
            assert await store.renew_leases("worker-a", 3000.0) == 1
        finally:
            await store.close()

    asyncio.run(reopen())
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] == (
            SCHEMA_VERSION
        )
        plan = conn.execute(
            "EXPLAIN QUERY PLAN UPDATE payments SET lease_until = 1"
            " WHERE status IN ('in_flight', 'pending') AND owner = 'x'"
        ).fetchall()
        assert any("payments_held_owner" in str(step) for step in plan), plan
        # The first schema's in-flight owner index is gone: the held one replaces it.
        indexes = {
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
        assert "payments_in_flight_owner" not in indexes and "payments_status" in indexes
        sweep = conn.execute(
            "EXPLAIN QUERY PLAN UPDATE payments SET status = 'credited'"
            " WHERE status = 'in_flight' AND lease_until < 1"
        ).fetchall()
        assert any("payments_status" in str(step) for step in sweep), sweep


def test_a_redis_row_written_before_refunds_existed_reads_with_no_refund(
    redis_port: int,
) -> None:
    url = f"redis://127.0.0.1:{redis_port}/0?key_prefix=old-rows:"

    async def body() -> None:
        store = open_store(url)
        await store.open()
        try:
            row = payment("legacy", status=DELIVERED, owner="")
            await store.insert_payment(row)
            client = store._client  # type: ignore[attr-defined]
            await client.hdel("old-rows:pay:legacy", "refund")
            assert await store.get_payment("legacy") == row
            assert await store.list_payments() == [row]
        finally:
            await store.close()

    asyncio.run(body())
