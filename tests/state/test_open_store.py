"""State URLs: which backend each opens, and errors that name the problem but never a password."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from mpp_proxy.state import open_store, redact_url
from mpp_proxy.state.memory import MemoryStore
from mpp_proxy.state.redis import DEFAULT_PREFIX, RedisStore
from mpp_proxy.state.sqlite import SQLiteStore


def test_memory_url_opens_memory_store() -> None:
    assert isinstance(open_store("memory://"), MemoryStore)


def test_sqlite_three_slashes_is_relative_four_is_absolute() -> None:
    relative = open_store("sqlite:///data/state.db")
    absolute = open_store("sqlite:////var/lib/mpp/state.db")
    assert isinstance(relative, SQLiteStore) and isinstance(absolute, SQLiteStore)
    assert relative.path == "data/state.db"
    assert absolute.path == "/var/lib/mpp/state.db"
    store = open_store("sqlite:///:memory:")
    assert isinstance(store, SQLiteStore) and store.path == ":memory:"


def test_sqlite_relative_path_resolves_against_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    async def main() -> None:
        store = open_store("sqlite:///sub%20dir.db")
        await store.open()
        await store.put("k", 1)
        await store.close()

    asyncio.run(main())
    assert (tmp_path / "sub dir.db").exists()


def test_sqlite_options_are_parsed_and_checked() -> None:
    store = open_store("sqlite:///x.db?synchronous=full&busy_timeout_ms=250")
    assert "FULL" in repr(store)
    with pytest.raises(ValueError, match="synchronous"):
        open_store("sqlite:///x.db?synchronous=sometimes")
    with pytest.raises(ValueError, match="cache"):
        open_store("sqlite:///x.db?cache=shared")
    with pytest.raises(ValueError, match="busy_timeout_ms"):
        open_store("sqlite:///x.db?busy_timeout_ms=soon")
    with pytest.raises(ValueError, match="file path"):
        open_store("sqlite:///")
    with pytest.raises(ValueError, match="sqlite:///"):
        open_store("sqlite://host/x.db")


def test_sqlite_memory_database_works_in_one_process() -> None:
    async def main() -> object:
        store = open_store("sqlite:///:memory:")
        await store.open()
        try:
            assert await store.put_if_absent("k", "v")
            return await store.get("k")
        finally:
            await store.close()

    assert asyncio.run(main()) == "v"


def test_redis_urls_open_redis_store_with_optional_prefix() -> None:
    plain = open_store("redis://127.0.0.1:6379/0")
    tls = open_store("rediss://cache.internal:6380/2")
    named = open_store("redis://127.0.0.1:6379/0?key_prefix=shop-a:")
    assert isinstance(plain, RedisStore) and isinstance(tls, RedisStore)
    assert f"key_prefix={DEFAULT_PREFIX!r}" in repr(plain)
    assert "key_prefix='shop-a:'" in repr(named)
    assert "key_prefix=" not in repr(named).split(",")[0]


def test_unknown_scheme_names_it_and_the_accepted_ones() -> None:
    with pytest.raises(ValueError) as err:
        open_store("postgres://admin:hunter2@db/ledger")
    message = str(err.value)
    assert "'postgres'" in message
    assert "memory://" in message and "sqlite:///" in message and "redis://" in message
    assert "hunter2" not in message
    with pytest.raises(ValueError) as err:
        open_store("s3cr3t_T0ken!:x")
    assert "s3cr3t" not in str(err.value)
    with pytest.raises(ValueError, match="no scheme"):
        open_store("state.db")
    with pytest.raises(ValueError, match="memory://"):
        open_store("memory://somewhere")


def test_redis_password_never_shown() -> None:
    url = "redis://:hunter2@127.0.0.1:6379/0"
    assert "hunter2" not in repr(open_store(url))
    assert redact_url(url) == "redis://:***@127.0.0.1:6379/0"
    assert redact_url("rediss://user:hunter2@h:1/0") == "rediss://user:***@h:1/0"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    with pytest.raises(ValueError) as err:
        open_store("redis://:hunter2@127.0.0.1:notaport/0")
    assert "hunter2" not in str(err.value)


def test_redis_unreachable_ping_is_false() -> None:
    async def main() -> bool:
        store = open_store("redis://127.0.0.1:1/0")
        await store.open()
        try:
            return await store.ping()
        finally:
            await store.close()

    assert asyncio.run(main()) is False


def test_sqlite_unwritable_location_fails_on_open(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")

    async def main() -> None:
        await open_store(f"sqlite:///{blocker}/state.db").open()

    # The missing directory cannot be created where a file stands.
    with pytest.raises(Exception, match=r"File exists|unable to open"):
        asyncio.run(main())
    assert os.listdir(tmp_path) == ["file"]


def test_sqlite_creates_the_missing_directories_of_its_file(tmp_path: Path) -> None:
    path = tmp_path / "var" / "lib" / "mpp-proxy" / "state.db"

    async def main() -> bool:
        store = open_store(f"sqlite:///{path}")
        await store.open()
        try:
            return await store.ping()
        finally:
            await store.close()

    assert asyncio.run(main())
    assert path.is_file()
