"""The SQLite store inside one process: file format, schema versions, open/close lifecycle."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from mpp_proxy.state import open_store
from mpp_proxy.state.sqlite import SCHEMA_VERSION


def test_file_is_in_wal_mode_with_a_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "state.db"

    async def create() -> None:
        store = open_store(f"sqlite:///{path}")
        await store.open()
        await store.close()

    asyncio.run(create())
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] == (
            SCHEMA_VERSION
        )


def test_a_file_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL)")
        conn.execute("INSERT INTO schema_version VALUES (?, 0)", (SCHEMA_VERSION + 1,))

    async def open_it() -> None:
        store = open_store(f"sqlite:///{path}")
        await store.open()

    with pytest.raises(RuntimeError, match="newer"):
        asyncio.run(open_it())


def test_concurrent_opens_share_one_connection(tmp_path: Path) -> None:
    async def main() -> list[object]:
        store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
        await asyncio.gather(*(store.open() for _ in range(5)))
        try:
            await store.put("k", 1)
            return [await store.get("k")]
        finally:
            await store.close()

    assert asyncio.run(main()) == [1]


def test_close_lets_submitted_calls_finish(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"

    async def main() -> list[object]:
        store = open_store(url)
        await store.open()
        writes = [asyncio.create_task(store.put(f"k{i}", i)) for i in range(20)]
        await asyncio.sleep(0)  # every write is now queued on the store's thread
        await store.close()
        results = await asyncio.gather(*writes, return_exceptions=True)
        again = open_store(url)
        await again.open()
        try:
            return [results, [await again.get(f"k{i}") for i in range(20)]]
        finally:
            await again.close()

    results, values = asyncio.run(main())
    assert results == [None] * 20
    assert values == list(range(20))


def test_close_twice_and_use_after_close(tmp_path: Path) -> None:
    async def main() -> None:
        store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
        await store.open()
        await store.close()
        await store.close()
        with pytest.raises(RuntimeError, match="after close"):
            await store.get("k")

    asyncio.run(main())


def test_a_cancelled_caller_leaves_the_store_usable(tmp_path: Path) -> None:
    async def main() -> list[object]:
        store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
        await store.open()
        try:
            calls = [asyncio.create_task(store.put_if_absent(f"k{i}", i)) for i in range(50)]
            await asyncio.sleep(0)
            for call in calls[::2]:
                call.cancel()
            await asyncio.gather(*calls, return_exceptions=True)
            # The statement of a cancelled call may still have run: cancelling is not undoing.
            return [await store.get(f"k{i}") for i in range(1, 50, 2)]
        finally:
            await store.close()

    assert asyncio.run(main()) == list(range(1, 50, 2))


def test_errors_in_the_store_thread_reach_the_caller(tmp_path: Path) -> None:
    async def main() -> None:
        store = open_store(f"sqlite:///{tmp_path / 'state.db'}")
        await store.open()
        try:
            with pytest.raises(TypeError):
                await store.put("k", {1, 2})  # a set is not JSON
            with pytest.raises(sqlite3.Error):
                await store.get(object())  # type: ignore[arg-type]
            assert await store.ping()
        finally:
            await store.close()

    asyncio.run(main())


def test_a_file_of_the_first_schema_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    import asyncio

    from mpp_proxy.state import open_store
    from mpp_proxy.state.sqlite import MIGRATIONS

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at REAL)")
        for statement in MIGRATIONS[0]:
            conn.execute(statement)
        conn.execute("INSERT INTO schema_version VALUES (1, 0)")
        conn.execute(
            "INSERT INTO payments VALUES ('k', 'c', 'm', 'test', 'r', '5', 'TEST', 's', 'GET /x',"
            " 'GET /s/x', '', 'credited', '', 0, 9e9, 1, 1, 1)"
        )

    async def read() -> object:
        store = open_store(f"sqlite:///{path}")
        await store.open()
        try:
            return await store.get_payment("k")
        finally:
            await store.close()

    row = asyncio.run(read())
    assert row is not None and getattr(row, "note", None) == ""
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] == (
            SCHEMA_VERSION
        )
