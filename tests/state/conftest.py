"""Fixtures for the store tests: one store URL per backend, and a real redis-server on loopback."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from state_support import RunStore

from mpp_proxy.state import Store, open_store
from tests.support.ports import free_port

BACKENDS = ("memory", "sqlite", "redis")
_prefixes = itertools.count()


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_port() -> Iterator[int]:
    """A private redis-server (no persistence) on a free loopback port, for the whole session."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run `make tools`")
    for _attempt in range(5):
        port = free_port()
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1"]
        proc = subprocess.Popen(
            [*argv, "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            if _redis_answers(port):
                break
            time.sleep(0.02)
        if proc.poll() is None and _redis_answers(port):
            break
        proc.kill()
        proc.wait()
    else:
        pytest.fail("could not start redis-server on a free loopback port")
    try:
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
