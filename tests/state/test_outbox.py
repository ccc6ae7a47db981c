"""The webhook outbox and payment counts, against every store backend."""

from __future__ import annotations

import asyncio
import time

from state_support import CREDITED, DELIVERED, RunStore, payment

from mpp_proxy.state import OutboxEntry, Store, open_store


def entry(entry_id: str, due: float, created: float | None = None) -> OutboxEntry:
    return OutboxEntry(
        entry_id, "http://127.0.0.1:9/hook", f'{{"id":"{entry_id}"}}', 0, due, created or due
    )


def test_outbox_add_is_once_per_id(run_store: RunStore) -> None:
    async def body(store: Store) -> None:
        now = time.time()
        assert await store.outbox_add(entry("a", now))
        assert not await store.outbox_add(entry("a", now + 5))
        assert await store.outbox_size() == 1

    run_store(body)


def test_claim_takes_due_entries_once_until_the_lease_ends(run_store: RunStore) -> None:
    async def body(store: Store) -> None:
        now = time.time()
        await store.outbox_add(entry("old", now - 10))
        await store.outbox_add(entry("due", now - 1))
        await store.outbox_add(entry("later", now + 60))
        claimed = await store.outbox_claim(now, now + 30, 10)
        assert [e.id for e in claimed] == ["old", "due"]
        assert all(e.due_at == now + 30 for e in claimed)
        assert claimed[0].body == '{"id":"old"}'
        # A second claimer (another worker) gets nothing until the lease ends.
        assert await store.outbox_claim(now, now + 30, 10) == []
        again = await store.outbox_claim(now + 31, now + 60, 10)
        assert [e.id for e in again] == ["old", "due"]

    run_store(body)


def test_claim_respects_the_limit_oldest_due_first(run_store: RunStore) -> None:
    async def body(store: Store) -> None:
        now = time.time()
        for i in range(5):
            await store.outbox_add(entry(f"e{i}", now - 10 + i))
        first = await store.outbox_claim(now, now + 30, 2)
        second = await store.outbox_claim(now, now + 30, 10)
        assert [e.id for e in first] == ["e0", "e1"]
        assert [e.id for e in second] == ["e2", "e3", "e4"]

    run_store(body)


def test_retry_reschedules_and_counts_attempts_done_removes(run_store: RunStore) -> None:
    async def body(store: Store) -> None:
        now = time.time()
        await store.outbox_add(entry("a", now))
        await store.outbox_add(entry("b", now))
        [a, b] = await store.outbox_claim(now, now + 30, 10)
        await store.outbox_retry(a.id, now + 5, 3)
        await store.outbox_done(b.id)
        await store.outbox_done("never-there")
        assert await store.outbox_size() == 1
        assert await store.outbox_claim(now + 4, now + 40, 10) == []
        [again] = await store.outbox_claim(now + 6, now + 40, 10)
        assert (again.id, again.attempts) == ("a", 3)

    run_store(body)


def test_concurrent_claims_never_share_an_entry(durable_store_url: str) -> None:
    """Two store clients (two workers) claiming at once split the due entries between them."""

    async def main() -> None:
        one, two = open_store(durable_store_url), open_store(durable_store_url)
        await one.open()
        await two.open()
        try:
            now = time.time()
            for i in range(40):
                await one.outbox_add(entry(f"e{i:02d}", now - 1))
            got = await asyncio.gather(
                *(s.outbox_claim(now, now + 30, 5) for _ in range(8) for s in (one, two))
            )
            ids = [e.id for batch in got for e in batch]
            assert sorted(ids) == [f"e{i:02d}" for i in range(40)]
        finally:
            await one.close()
            await two.close()

    asyncio.run(main())


def test_count_payments_by_status(run_store: RunStore) -> None:
    async def body(store: Store) -> None:
        await store.insert_payment(payment("a", status=CREDITED))
        await store.insert_payment(payment("b", status=CREDITED))
        await store.insert_payment(payment("c", status=DELIVERED))
        assert await store.count_payments(CREDITED) == 2
        assert await store.count_payments(DELIVERED) == 1

    run_store(body)
