"""Rate buckets and spend counters behave the same on every backend (memory, SQLite, Redis)."""

from __future__ import annotations

import asyncio
import time

from state_support import RunStore

from mpp_proxy.state import Store

SECOND = 1_000_000  # microseconds
# Three per minute, all three at once: interval 20 s, capacity 60 s.
THREE_PER_MINUTE = (20 * SECOND, 60 * SECOND)


def test_a_bucket_takes_its_capacity_then_refuses(run_store: RunStore) -> None:
    async def body(store: Store) -> list[tuple[bool, int]]:
        out = []
        for _ in range(4):
            taken = await store.take(["b"], [THREE_PER_MINUTE])
            out.append((taken.ok, taken.used[0]))
        return out

    got = run_store(body)
    assert [ok for ok, _ in got] == [True, True, True, False]
    # Used grows by one interval per request (less the time passed, a few ms at most).
    for n, (_, used) in enumerate(got, start=1):
        assert n * 20 * SECOND - SECOND < used <= n * 20 * SECOND


def test_a_refused_request_consumes_nothing_in_any_bucket(run_store: RunStore) -> None:
    async def body(store: Store) -> tuple[bool, bool, int]:
        one = (SECOND, SECOND)  # one at once
        assert (await store.take(["full"], [one])).ok
        both = await store.take(["free", "full"], [THREE_PER_MINUTE, one])
        # "free" was not charged for the refused request: it still has all three.
        again = [await store.take(["free"], [THREE_PER_MINUTE]) for _ in range(3)]
        return both.ok, all(t.ok for t in again), both.used[0]

    ok, three_left, used_free = run_store(body)
    assert ok is False
    assert three_left is True
    assert 19 * SECOND < used_free <= 20 * SECOND


def test_buckets_refill_with_time(run_store: RunStore) -> None:
    async def body(store: Store) -> tuple[bool, bool]:
        tenth = (SECOND // 10, SECOND // 10)  # one per 100 ms, one at once
        assert (await store.take(["r"], [tenth])).ok
        refused = (await store.take(["r"], [tenth])).ok
        await asyncio.sleep(0.15)
        return refused, (await store.take(["r"], [tenth])).ok

    assert run_store(body) == (False, True)


def test_spend_counters_refuse_over_the_allowance(run_store: RunStore) -> None:
    async def body(store: Store) -> list[tuple[bool, tuple[int, ...]]]:
        until = time.time() + 60
        out = []
        taken = await store.take(["s-b"], [THREE_PER_MINUTE], ["s"], [100])
        out.append((taken.ok, taken.spent))
        await store.add_spent("s", 60, until, op="p1")
        await store.add_spent("s", 60, until, op="p1")  # the same payment again: counted once
        taken = await store.take(["s-b"], [THREE_PER_MINUTE], ["s"], [100])
        out.append((taken.ok, taken.spent))
        await store.add_spent("s", 50, until, op="p2")
        taken = await store.take(["s-b"], [THREE_PER_MINUTE], ["s"], [100])
        out.append((taken.ok, taken.spent))
        return out

    assert run_store(body) == [(True, (0,)), (True, (60,)), (False, (110,))]


def test_an_expired_spend_counter_starts_again(run_store: RunStore) -> None:
    async def body(store: Store) -> tuple[int, int]:
        await store.add_spent("e", 70, time.time() + 0.2, op="e1")
        before = (await store.take([], [], ["e"], [1000])).spent[0]
        await asyncio.sleep(0.3)
        await store.add_spent("e", 5, time.time() + 60, op="e2")
        return before, (await store.take([], [], ["e"], [1000])).spent[0]

    assert run_store(body) == (70, 5)


def test_concurrent_takes_admit_exactly_the_capacity(run_store: RunStore) -> None:
    async def body(store: Store) -> int:
        ten = (6 * SECOND, 60 * SECOND)  # ten per minute
        results = await asyncio.gather(*(store.take(["c"], [ten]) for _ in range(30)))
        return sum(t.ok for t in results)

    assert run_store(body) == 10
