"""The SQLite store (sqlite:///path.db): the default, one file shared by every worker process."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, TypeVar

from mpp_proxy.state.base import Payment, PaymentStatus
from mpp_proxy.state.call_thread import CallThread, write_locked
from mpp_proxy.state.codec import (
    CHANGEABLE_FIELDS,
    PAYMENT_FIELDS,
    check_expiry,
    coerce_changes,
    decode_value,
    encode_value,
    payment_from_row,
    payment_to_row,
    statuses,
)
from mpp_proxy.state.sqlite_limits import SQLiteCounters
from mpp_proxy.state.sqlite_outbox import SQLiteOutbox

T = TypeVar("T")

# RETURNING makes every ledger transition one statement that both checks and reports.
MIN_SQLITE_VERSION: Final = (3, 35, 0)
SYNCHRONOUS_MODES: Final = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})

_COLUMNS: Final = ", ".join(PAYMENT_FIELDS)
# Statuses a live request holds (leases renewed, dead holders taken over), as SQL.
_HELD: Final = "('in_flight', 'pending')"
_INSERT: Final = (
    f"INSERT INTO payments ({_COLUMNS}) VALUES ({', '.join('?' * len(PAYMENT_FIELDS))})"
)

# Each entry is one schema version; open() applies the ones a file has not seen, in order,
# inside one write transaction, so concurrent workers opening a fresh file never race.
MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        "CREATE TABLE kv ("
        " key TEXT PRIMARY KEY,"
        " value TEXT NOT NULL,"
        " expires_at REAL"  # NULL: never; replay claims must not expire
        ") WITHOUT ROWID",
        "CREATE TABLE payments ("
        " key TEXT PRIMARY KEY,"
        " challenge_id TEXT NOT NULL,"
        " method TEXT NOT NULL,"
        " kind TEXT NOT NULL,"
        " reference TEXT NOT NULL,"
        " amount TEXT NOT NULL,"  # base units may exceed 64 bits (18-decimal tokens)
        " currency TEXT NOT NULL,"
        " service TEXT NOT NULL,"
        " route TEXT NOT NULL,"
        " scope TEXT NOT NULL,"
        " payer TEXT NOT NULL,"
        " status TEXT NOT NULL,"
        " owner TEXT NOT NULL,"
        " lease_until REAL NOT NULL,"
        " credit_until REAL NOT NULL,"
        " attempts INTEGER NOT NULL,"
        " created_at REAL NOT NULL,"
        " updated_at REAL NOT NULL"
        ")",
        "CREATE INDEX payments_created ON payments (created_at, key)",
        "CREATE INDEX payments_status ON payments (status, created_at, key)",
        # Partial: only live claims are in it, so renew_leases never walks the history.
        # (Credit and lease sweeps use payments_status: open credits and claims are few.)
        "CREATE INDEX payments_in_flight_owner ON payments (owner) WHERE status = 'in_flight'",
    ),
    (
        # Refunds: the refund's id once a payment was given back.
        "ALTER TABLE payments ADD COLUMN refund TEXT NOT NULL DEFAULT ''",
        # Claims settled after the upstream answered are held as `pending` until then: one
        # partial index over both held statuses serves renew_leases.
        f"CREATE INDEX payments_held_owner ON payments (owner) WHERE status IN {_HELD}",
    ),
    # 3: an operator's note on a row (who voided a credit, and why).
    ("ALTER TABLE payments ADD COLUMN note TEXT NOT NULL DEFAULT ''",),
    (
        # 4: webhook deliveries not yet received (the durable outbox).
        "CREATE TABLE outbox ("
        " id TEXT PRIMARY KEY,"
        " target TEXT NOT NULL,"
        " body TEXT NOT NULL,"
        " attempts INTEGER NOT NULL,"
        " due_at REAL NOT NULL,"
        " created_at REAL NOT NULL"
        ") WITHOUT ROWID",
        "CREATE INDEX outbox_due ON outbox (due_at, id)",
    ),
    # 5: payments_held_owner serves every query the in-flight index did; each transition in
    # or out of in_flight no longer updates a second index.
    ("DROP INDEX IF EXISTS payments_in_flight_owner",),
    # 6: rate buckets (GCRA): the theoretical arrival time, wall-clock microseconds; a row in
    # the past is a full bucket, so old rows are only swept, never needed. Spend counters.
    (
        "CREATE TABLE rate_buckets (key TEXT PRIMARY KEY, tat INTEGER NOT NULL) WITHOUT ROWID",
        "CREATE TABLE spent ("
        " key TEXT PRIMARY KEY, amount INTEGER NOT NULL, expires_at REAL NOT NULL"
        ") WITHOUT ROWID",
        "CREATE TABLE spent_ops (op TEXT PRIMARY KEY, expires_at REAL NOT NULL) WITHOUT ROWID",
    ),
)

SCHEMA_VERSION: Final = len(MIGRATIONS)


class SQLiteStore(SQLiteOutbox, SQLiteCounters):
    """One sqlite3 connection per process, used only from one dedicated worker thread.

    The thread serialises this process's calls (no lock needed) and keeps the event loop free
    while SQLite waits for another process's write lock (`busy_timeout`). Several processes may
    open the same file: WAL lets readers run beside the single writer, and every ledger change
    is one conditional statement, so the database decides races, not Python. The limit
    counters (take, add_spent) are in SQLiteCounters.
    """

    __slots__ = ("_busy_timeout_ms", "_conn", "_opening", "_path", "_synchronous", "_thread")

    def __init__(
        self, path: str, *, synchronous: str = "NORMAL", busy_timeout_ms: int = 10_000
    ) -> None:
        mode = synchronous.upper()
        if mode not in SYNCHRONOUS_MODES:
            raise ValueError(
                f"sqlite synchronous must be one of {', '.join(sorted(SYNCHRONOUS_MODES))}"
            )
        self._path = path
        self._synchronous = mode
        self._busy_timeout_ms = busy_timeout_ms
        self._conn: sqlite3.Connection | None = None
        self._thread: CallThread | None = None
        # Two tasks calling open() at once must not create two connections and threads.
        self._opening = asyncio.Lock()

    def __repr__(self) -> str:
        return f"SQLiteStore({self._path!r}, synchronous={self._synchronous!r})"

    @property
    def path(self) -> str:
        return self._path

    # ------------------------------------------------------------------ plumbing

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        thread = self._thread
        if thread is None or self._conn is None:
            raise RuntimeError("SQLiteStore used before open() or after close()")
        return await thread.submit(fn, args)

    async def open(self) -> None:
        async with self._opening:
            if self._conn is None:
                await self._open()

    async def _open(self) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
            raise RuntimeError(
                f"SQLite {sqlite3.sqlite_version} is too old: mpp-proxy needs >= 3.35 (RETURNING)"
            )
        thread = CallThread("mpp-proxy-sqlite")
        try:
            conn = await thread.submit(self._connect, (), solo=True)
        except BaseException:
            thread.stop()
            raise
        thread.group_commit(conn)
        self._thread = thread
        self._conn = conn

    def _connect(self) -> sqlite3.Connection:
        if self._path != ":memory:":
            # A state file in a directory that does not exist yet (a fresh volume, the
            # examples' state/ directory) is created with it rather than refused.
            Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: each statement commits on its own unless we say BEGIN.
        conn = sqlite3.connect(
            self._path,
            timeout=self._busy_timeout_ms / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            _retry_locked(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone())
            # In WAL mode NORMAL loses nothing on a process crash (kill -9): a commit is in the
            # WAL file once the statement returns. Only an OS crash / power cut may drop the
            # last commits; FULL (sqlite:///x.db?synchronous=full) fsyncs each commit for that.
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            _retry_locked(lambda: _migrate(conn))
            now = time.time()
            conn.execute("DELETE FROM kv WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,))
        except BaseException:
            conn.close()
            raise
        return conn

    async def close(self) -> None:
        conn, thread = self._conn, self._thread
        if conn is None or thread is None:
            return
        try:
            # Queued behind any call already submitted, so those finish on an open connection.
            await thread.submit(conn.close, (), solo=True)
        finally:
            self._conn = self._thread = None
            thread.stop()

    async def ping(self) -> bool:
        try:
            return await self._call(self._ping)
        except (sqlite3.Error, RuntimeError):
            return False

    def _ping(self) -> bool:
        assert self._conn is not None
        return bool(self._conn.execute("SELECT 1").fetchone())

    # ------------------------------------------------------------------ pympp KV

    async def get(self, key: str) -> Any | None:
        return await self._call(self._get, key)

    def _get(self, key: str) -> Any | None:
        assert self._conn is not None
        row = self._conn.execute(
            "SELECT value FROM kv WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)",
            (key, time.time()),
        ).fetchone()
        return None if row is None else decode_value(row[0])

    async def put(self, key: str, value: Any) -> None:
        await self._call(self._put, key, encode_value(value))

    def _put(self, key: str, encoded: str) -> None:
        assert self._conn is not None
        self._conn.execute(
            "INSERT INTO kv (key, value, expires_at) VALUES (?, ?, NULL)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = NULL",
            (key, encoded),
        )

    async def delete(self, key: str) -> None:
        await self._call(self._delete, key)

    def _delete(self, key: str) -> None:
        assert self._conn is not None
        self._conn.execute("DELETE FROM kv WHERE key = ?", (key,))

    async def put_if_absent(self, key: str, value: Any) -> bool:
        return await self._call(self._put_if_absent, key, encode_value(value), None)

    async def put_if_absent_until(self, key: str, value: Any, expires_at: float) -> bool:
        """pympp's optional `ExpiringStore` call: like put_if_absent, gone after `expires_at`."""
        check_expiry(expires_at, time.time())
        return await self._call(self._put_if_absent, key, encode_value(value), float(expires_at))

    def _put_if_absent(self, key: str, encoded: str, expires_at: float | None) -> bool:
        assert self._conn is not None
        # One statement: insert, or take over a row whose own deadline has passed.
        cur = self._conn.execute(
            "INSERT INTO kv (key, value, expires_at) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value,"
            " expires_at = excluded.expires_at"
            " WHERE kv.expires_at IS NOT NULL AND kv.expires_at <= ?",
            (key, encoded, expires_at, time.time()),
        )
        return cur.rowcount > 0

    # -------------------------------------------------------------------- ledger

    async def insert_payment(self, payment: Payment) -> Payment | None:
        return await self._call(self._insert_payment, payment_to_row(payment))

    def _insert_payment(self, row: tuple[Any, ...]) -> Payment | None:
        conn = self._conn
        assert conn is not None
        cur = conn.execute(_INSERT + " ON CONFLICT (key) DO NOTHING", row)
        if cur.rowcount > 0:
            return None
        existing = self._get_payment(row[0])
        if existing is not None:
            return existing
        # The conflicting row was deleted between the two statements (its owner's verification
        # failed): decide again under the write lock so the answer is consistent.
        with write_locked(conn):
            existing = self._get_payment(row[0])
            if existing is None:
                conn.execute(_INSERT, row)
        return existing

    async def get_payment(self, key: str) -> Payment | None:
        return await self._call(self._get_payment, key)

    def _get_payment(self, key: str) -> Payment | None:
        assert self._conn is not None
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM payments WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else payment_from_row(row)

    async def transition(
        self,
        key: str,
        *,
        expect: tuple[PaymentStatus, ...],
        status: PaymentStatus,
        expect_owner: str | None = None,
        lease_expired_before: float | None = None,
        **changes: Any,
    ) -> Payment | None:
        allowed = statuses(expect)
        updates = coerce_changes(changes)
        names = tuple(sorted(updates))
        sql = _transition_sql(
            len(allowed), names, expect_owner is not None, lease_expired_before is not None
        )
        params: list[Any] = [PaymentStatus(status).value, time.time()]
        params.extend(updates[n] for n in names)
        params.append(key)
        params.extend(s.value for s in allowed)
        if expect_owner is not None:
            params.append(expect_owner)
        if lease_expired_before is not None:
            params.append(float(lease_expired_before))
        return await self._call(self._returning_one, sql, tuple(params))

    def _returning_one(self, sql: str, params: tuple[Any, ...]) -> Payment | None:
        assert self._conn is not None
        # fetchall() runs the statement to completion, which is when an autocommit UPDATE
        # ... RETURNING commits; fetchone() would leave the write transaction open.
        rows = self._conn.execute(sql, params).fetchall()
        return payment_from_row(rows[0]) if rows else None

    async def delete_payment(self, key: str, *, expect_owner: str) -> bool:
        sql = f"DELETE FROM payments WHERE key = ? AND status IN {_HELD} AND owner = ?"
        return await self._call(self._rowcount, sql, (key, expect_owner)) > 0

    def _rowcount(self, sql: str, params: tuple[Any, ...]) -> int:
        assert self._conn is not None
        return self._conn.execute(sql, params).rowcount

    def _select_rows(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        assert self._conn is not None
        return self._conn.execute(sql, params).fetchall()

    async def renew_leases(self, owner: str, lease_until: float) -> int:
        return await self._call(
            self._rowcount,
            f"UPDATE payments SET lease_until = ?, updated_at = ? WHERE status IN {_HELD}"
            " AND owner = ?",
            (float(lease_until), time.time(), owner),
        )

    async def forfeit_expired_credits(self, now: float) -> int:
        return await self._call(
            self._rowcount,
            "UPDATE payments SET status = 'forfeited', updated_at = ?"
            " WHERE status = 'credited' AND credit_until < ?",
            (time.time(), float(now)),
        )

    async def credit_abandoned(self, now: float, credit_until: float) -> int:
        return await self._call(
            self._rowcount,
            "UPDATE payments SET status = 'credited', owner = '', credit_until = ?,"
            " updated_at = ? WHERE status = 'in_flight' AND lease_until < ?",
            (float(credit_until), time.time(), float(now)),
        )

    async def release_abandoned(self, now: float) -> int:
        return await self._call(
            self._rowcount,
            "UPDATE payments SET status = 'released', owner = '', updated_at = ?"
            " WHERE status = 'pending' AND lease_until < ?",
            (time.time(), float(now)),
        )

    async def list_payments(
        self, *, status: PaymentStatus | None = None, limit: int = 100
    ) -> list[Payment]:
        if status is None:
            sql = f"SELECT {_COLUMNS} FROM payments ORDER BY created_at DESC, key DESC LIMIT ?"
            params: tuple[Any, ...] = (max(limit, 0),)
        else:
            sql = (
                f"SELECT {_COLUMNS} FROM payments WHERE status = ?"
                " ORDER BY created_at DESC, key DESC LIMIT ?"
            )
            params = (PaymentStatus(status).value, max(limit, 0))
        return await self._call(self._select, sql, params)

    def _select(self, sql: str, params: tuple[Any, ...]) -> list[Payment]:
        assert self._conn is not None
        return [payment_from_row(r) for r in self._conn.execute(sql, params)]


@lru_cache(maxsize=256)
def _transition_sql(n_expect: int, names: tuple[str, ...], owner: bool, lease: bool) -> str:
    assert set(names) <= CHANGEABLE_FIELDS  # column names are interpolated: whitelist only
    sets = "".join(f", {n} = ?" for n in names)
    sql = (
        f"UPDATE payments SET status = ?, updated_at = ?{sets}"
        f" WHERE key = ? AND status IN ({', '.join('?' * n_expect)})"
    )
    if owner:
        sql += " AND owner = ?"
    if lease:
        sql += f" AND (status NOT IN {_HELD} OR lease_until < ?)"
    return sql + f" RETURNING {_COLUMNS}"


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version"
            " (version INTEGER PRIMARY KEY, applied_at REAL NOT NULL)"
        )
        current = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0]
        if current > SCHEMA_VERSION:
            raise RuntimeError(
                f"state file schema version {current} is newer than this mpp-proxy"
                f" understands ({SCHEMA_VERSION}); upgrade mpp-proxy"
            )
        for version in range(current + 1, SCHEMA_VERSION + 1):
            for statement in MIGRATIONS[version - 1]:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                (version, time.time()),
            )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _retry_locked(fn: Callable[[], object], attempts: int = 50) -> None:
    # busy_timeout covers ordinary statements, but switching a fresh file to WAL while another
    # process does the same can still report "locked" at once; a short retry settles it.
    for attempt in range(attempts):
        try:
            fn()
            return
        except sqlite3.OperationalError as err:
            if ("locked" not in str(err) and "busy" not in str(err)) or attempt == attempts - 1:
                raise
            time.sleep(0.02)
