"""Rate buckets and spend counters in the SQLite file: the statements `SQLiteStore.take` and
`add_spent` run in the store's thread, each decision one statement or one write transaction,
so several worker processes on one file count together (the database decides races)."""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar

from mpp_proxy.state.base import BucketSpec, Taken
from mpp_proxy.state.call_thread import write_locked
from mpp_proxy.state.codec import gcra

# One bucket, no spend counter (the usual limit): decided in one statement. The row is written
# only when the request fits; RETURNING then gives its new arrival time, no row means refused.
_TAKE_ONE: Final = (
    "INSERT INTO rate_buckets (key, tat) VALUES (?1, ?2 + ?3)"
    " ON CONFLICT (key) DO UPDATE SET tat = max(tat, ?2) + ?3"
    " WHERE max(tat, ?2) + ?3 - ?2 <= ?4 RETURNING tat"
)
_UPSERT_TAT: Final = (
    "INSERT INTO rate_buckets (key, tat) VALUES (?, ?)"
    " ON CONFLICT (key) DO UPDATE SET tat = excluded.tat"
)
_SPENT: Final = "SELECT amount FROM spent WHERE key = ? AND expires_at > ?"
_ADD_SPENT: Final = (
    "INSERT INTO spent (key, amount, expires_at) VALUES (?1, ?2, ?3)"
    " ON CONFLICT (key) DO UPDATE SET"
    " amount = CASE WHEN expires_at > ?4 THEN amount + ?2 ELSE ?2 END, expires_at = ?3"
)
# Expired counters are swept every this many decisions.
SWEEP_EVERY: Final = 4096
_decisions = itertools.count(1)

T = TypeVar("T")


class SQLiteCounters:
    """The limit counters of SQLiteStore, which mixes this in: calls run in its thread."""

    __slots__ = ()
    _conn: sqlite3.Connection | None

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError

    async def take(
        self,
        buckets: Sequence[str],
        specs: Sequence[BucketSpec],
        spend: Sequence[str] = (),
        allowances: Sequence[int] = (),
    ) -> Taken:
        sweep = next(_decisions) % SWEEP_EVERY == 0
        args = (self._conn, tuple(buckets), tuple(specs), tuple(spend), tuple(allowances), sweep)
        return await self._call(take_in, *args)

    async def add_spent(self, key: str, amount: int, expires_at: float, op: str) -> None:
        await self._call(add_spent_in, self._conn, key, int(amount), float(expires_at), op)


def take_in(
    conn: sqlite3.Connection,
    buckets: tuple[str, ...],
    specs: tuple[BucketSpec, ...],
    spend: tuple[str, ...],
    allowances: Sequence[int],
    sweep: bool,
) -> Taken:
    """`Store.take` on a connection (wall-clock microseconds, shared by the file's processes)."""
    now = time.time_ns() // 1000
    if sweep:
        _sweep(conn, now)
    if len(buckets) == 1 and not spend:
        interval, capacity = specs[0]
        rows = conn.execute(_TAKE_ONE, (buckets[0], now, interval, capacity)).fetchall()
        if rows:
            return Taken(True, (rows[0][0] - now,), ())
        # Refused: decided again below, where what the bucket holds is read.
    with write_locked(conn):
        tats = [_one(conn, "SELECT tat FROM rate_buckets WHERE key = ?", k) for k in buckets]
        spent = [_one(conn, _SPENT, k, now / 1e6) or 0 for k in spend]
        taken, news = gcra(tats, specs, spent, allowances, now)
        if taken.ok:
            conn.executemany(_UPSERT_TAT, zip(buckets, news, strict=True))
    return taken


def add_spent_in(
    conn: sqlite3.Connection, key: str, amount: int, expires_at: float, op: str
) -> None:
    """`Store.add_spent` on a connection: the op marker and the sum in one transaction."""
    with write_locked(conn):
        new = conn.execute(
            "INSERT INTO spent_ops (op, expires_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
            (op, expires_at),
        ).rowcount
        if new:
            conn.execute(_ADD_SPENT, (key, amount, expires_at, time.time()))


def _sweep(conn: sqlite3.Connection, now: int) -> None:
    conn.execute("DELETE FROM rate_buckets WHERE tat < ?", (now,))
    conn.execute("DELETE FROM spent WHERE expires_at < ?", (now / 1e6,))
    conn.execute("DELETE FROM spent_ops WHERE expires_at < ?", (now / 1e6,))


def _one(conn: sqlite3.Connection, sql: str, *params: Any) -> Any:
    row = conn.execute(sql, params).fetchone()
    return None if row is None else row[0]
