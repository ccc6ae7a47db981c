"""Fixtures for the store tests: one store URL per backend, and a real redis-server on loopback."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from state_support import RunStore

from mpp_proxy.state import Store, open_store
from tests.support.redis_server import redis_port  # noqa: F401 (a fixture: found here)

BACKENDS = ("memory", "sqlite", "redis")
_prefixes = itertools.count()


def _fresh_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    port = request.getfixturevalue("redis_port")
    # A fresh key prefix per test keeps tests independent on the shared server.
    return f"redis://127.0.0.1:{port}/0?key_prefix=t{next(_prefixes)}-{time.time_ns()}:"


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for a fresh, empty store of each backend."""
    return _fresh_url(request.param, request, tmp_path)


@pytest.fixture(params=[b for b in BACKENDS if b != "memory"])
def durable_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A URL for a fresh store of each backend that outlives its connection."""
    return _fresh_url(request.param, request, tmp_path)


@pytest.fixture
def run_store(store_url: str) -> RunStore:
    """run_store(body): open the store, await body(store) on a fresh loop, close, return result."""

    def run(body: Callable[[Store], Awaitable[Any]]) -> Any:
        async def main() -> Any:
            store = open_store(store_url)
            await store.open()
            try:
                return await body(store)
            finally:
                await store.close()

        return asyncio.run(main())

    return run
