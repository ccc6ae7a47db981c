"""The SQLite call thread: calls queued together commit together, each keeps its own outcome."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from mpp_proxy.state import open_store
from mpp_proxy.state.call_thread import MAX_GROUP, CallThread


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY)")
    return conn


def _insert(conn: sqlite3.Connection, k: int) -> int:
    conn.execute("INSERT INTO t (k) VALUES (?)", (k,))
    return k


def test_calls_waiting_together_share_one_commit_and_answer_after_it(tmp_path: Path) -> None:
    conn = _connect(tmp_path / "g.db")
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    reader = sqlite3.connect(tmp_path / "g.db")
    thread = CallThread("test-group")
    thread.group_commit(conn)
    seen_when_answered: list[bool] = []

    async def main() -> list[int]:
        # Queued before the thread can take the first one: they form groups.
        futures = [thread.submit(_insert, (conn, k)) for k in range(100)]
        for k, future in enumerate(futures):
            future.add_done_callback(
                lambda _f, k=k: seen_when_answered.append(
                    reader.execute("SELECT 1 FROM t WHERE k = ?", (k,)).fetchone() is not None
                )
            )
        return list(await asyncio.gather(*futures))

    try:
        assert asyncio.run(main()) == list(range(100))
    finally:
        thread.stop()
    commits = statements.count("COMMIT")
    assert 1 <= commits < 100, statements[:10]
    assert commits >= 100 // MAX_GROUP
    # Every caller was answered only once another connection could read its row.
    assert seen_when_answered == [True] * 100
    assert reader.execute("SELECT count(*) FROM t").fetchone()[0] == 100


def test_a_call_that_fails_in_a_group_fails_alone(tmp_path: Path) -> None:
    conn = _connect(tmp_path / "f.db")
    conn.execute("INSERT INTO t (k) VALUES (7)")
    thread = CallThread("test-fail")
    thread.group_commit(conn)

    async def main() -> list[object]:
        futures = [thread.submit(_insert, (conn, k)) for k in range(5, 10)]
        return list(await asyncio.gather(*futures, return_exceptions=True))

    try:
        results = asyncio.run(main())
    finally:
        thread.stop()
    assert results[:2] == [5, 6] and results[3:] == [8, 9]
    assert isinstance(results[2], sqlite3.IntegrityError)
    rows = sqlite3.connect(tmp_path / "f.db").execute("SELECT k FROM t ORDER BY k").fetchall()
    assert rows == [(5,), (6,), (7,), (8,), (9,)]


def test_concurrent_ledger_writes_through_the_store_all_land(tmp_path: Path) -> None:
    """The store's own calls grouped: 200 concurrent claims of 100 keys, exactly one per key."""
    path = tmp_path / "s.db"

    async def main() -> list[bool]:
        store = open_store(f"sqlite:///{path}")
        await store.open()
        try:
            claims = [store.put_if_absent(f"claim:{i % 100}", i) for i in range(200)]
            return list(await asyncio.gather(*claims))
        finally:
            await store.close()

    won = asyncio.run(main())
    assert sum(won) == 100
    assert all(won[:100]) and not any(won[100:])
    rows = sqlite3.connect(path).execute("SELECT count(*) FROM kv").fetchone()[0]
    assert rows == 100


def test_a_solo_call_runs_outside_any_group(tmp_path: Path) -> None:
    """Opening and closing the connection never run inside a group's transaction."""
    conn = _connect(tmp_path / "s.db")
    thread = CallThread("test-solo")
    thread.group_commit(conn)

    def in_transaction() -> bool:
        return conn.in_transaction

    async def main() -> tuple[list[int], bool, list[int]]:
        before = [thread.submit(_insert, (conn, k)) for k in range(3)]
        solo = thread.submit(in_transaction, (), solo=True)
        after = [thread.submit(_insert, (conn, k)) for k in range(3, 6)]
        return list(await asyncio.gather(*before)), await solo, list(await asyncio.gather(*after))

    try:
        before, in_group, after = asyncio.run(main())
    finally:
        thread.stop()
    assert (before, in_group, after) == ([0, 1, 2], False, [3, 4, 5])
