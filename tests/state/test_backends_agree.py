"""Random ledger histories give the same answers on sqlite and redis as on the memory model."""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from state_support import payment

from mpp_proxy.state import Payment, PaymentStatus, Store, open_store

KEYS = ("a", "b", "c")
OWNERS = ("", "w1", "w2")
STATUSES = tuple(PaymentStatus)
_prefixes = itertools.count()


def operations(rows: list[Payment]) -> st.SearchStrategy[tuple[Any, ...]]:
    """One ledger call, aimed mostly at existing rows and at their own deadlines and owners,
    so the boundaries (lease_until == bound, credit_until == now) are actually reached."""
    times = st.sampled_from(
        sorted({0.0, 10.0, 20.0} | {t for r in rows for t in (r.lease_until, r.credit_until)})
    )
    owners = st.sampled_from(sorted(set(OWNERS) | {r.owner for r in rows}))
    statuses = st.sampled_from(STATUSES)
    keys = st.sampled_from(KEYS)
    targets: st.SearchStrategy[tuple[Payment | None, str]] = keys.map(lambda k: (None, k))
    if rows:
        targets = st.one_of(st.sampled_from(rows).map(lambda r: (r, r.key)), targets)

    insert = st.builds(
        lambda key, status, owner, lease, credit, created, amount: (
            "insert",
            payment(
                key,
                status=status,
                owner=owner,
                lease_until=lease,
                credit_until=credit,
                created_at=created,
                amount=str(amount),
            ),
        ),
        keys,
        statuses,
        owners,
        times,
        times,
        st.sampled_from([0.0, 10.0, 20.0]),
        st.integers(0, 10**20),
    )

    def transition_on(target: tuple[Payment | None, str]) -> st.SearchStrategy[tuple[Any, ...]]:
        row, key = target
        expect: st.SearchStrategy[list[PaymentStatus]] = st.lists(
            statuses, min_size=1, max_size=3, unique=True
        )
        lease: st.SearchStrategy[float | None] = st.none() | times
        if row is not None:
            expect = st.one_of(st.just([row.status]), expect)
            lease = st.one_of(st.just(row.lease_until), lease)
        return st.builds(
            lambda expect, status, owner, lease, changes: (
                "transition",
                key,
                tuple(expect),
                status,
                owner,
                lease,
                changes,
            ),
            expect,
            statuses,
            st.none() | owners,
            lease,
            st.fixed_dictionaries(
                {},
                optional={
                    "owner": owners,
                    "lease_until": times,
                    "credit_until": times,
                    "attempts": st.integers(0, 3),
                    "reference": st.sampled_from(["", "0xfeed"]),
                },
            ),
        )

    by_kind: dict[str, st.SearchStrategy[tuple[Any, ...]]] = {
        "insert": insert,
        "transition": targets.flatmap(transition_on),
        "delete": st.tuples(st.just("delete"), targets.map(lambda t: t[1]), owners),
        "renew": st.tuples(st.just("renew"), owners, times),
        "forfeit": st.tuples(st.just("forfeit"), times),
        "abandoned": st.tuples(st.just("abandoned"), times, times),
        "list": st.tuples(st.just("list"), st.none() | statuses, st.integers(0, 4)),
        "totals": st.tuples(st.just("totals")),
        "get": st.tuples(st.just("get"), keys),
    }
    # Inserts and transitions are where the semantics live: draw them most often.
    weighted = ["insert", "insert", "transition", "transition", "transition", *by_kind]
    return st.sampled_from(weighted).flatmap(lambda kind: by_kind[kind])


def _plain(result: Any) -> Any:
    # updated_at is the store's clock: the one field that may differ between backends.
    if isinstance(result, Payment):
        return replace(result, updated_at=0.0)
    if isinstance(result, list):
        return [_plain(r) for r in result]
    return result


async def _apply(store: Store, op: tuple[Any, ...]) -> Any:
    kind = op[0]
    if kind == "insert":
        got: Any = await store.insert_payment(op[1])
    elif kind == "transition":
        _, key, expect, status, owner, lease, changes = op
        got = await store.transition(
            key,
            expect=expect,
            status=status,
            expect_owner=owner,
            lease_expired_before=lease,
            **changes,
        )
    elif kind == "delete":
        got = await store.delete_payment(op[1], expect_owner=op[2])
    elif kind == "renew":
        got = await store.renew_leases(op[1], op[2])
    elif kind == "forfeit":
        got = await store.forfeit_expired_credits(op[1])
    elif kind == "abandoned":
        got = await store.credit_abandoned(op[1], op[2])
    elif kind == "list":
        got = await store.list_payments(status=op[1], limit=op[2])
    elif kind == "totals":
        got = await store.totals()
    else:
        got = await store.get_payment(op[1])
    return _plain(got)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_sqlite_and_redis_agree_with_memory(redis_port: int, data: st.DataObject) -> None:
    async def main(tmp: str) -> None:
        urls = [
            "memory://",
            f"sqlite:///{Path(tmp) / 'state.db'}",
            f"redis://127.0.0.1:{redis_port}/0?key_prefix=agree{next(_prefixes)}:",
        ]
        stores = [open_store(url) for url in urls]
        for store in stores:
            await store.open()
        try:
            model = stores[0]
            for _step in range(data.draw(st.integers(5, 30), label="steps")):
                rows = await model.list_payments(limit=100)
                op = data.draw(operations(rows), label="op")
                results = [await _apply(store, op) for store in stores]
                assert results[1] == results[0], ("sqlite", op)
                assert results[2] == results[0], ("redis", op)
            # The end state, in full, must agree too.
            final = [_plain(await store.list_payments(limit=100)) for store in stores]
            assert final[1] == final[0] and final[2] == final[0]
        finally:
            for store in stores:
                await store.close()

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(main(tmp))
