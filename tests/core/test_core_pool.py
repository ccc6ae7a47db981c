"""UpstreamPool on real loopback connections: LIFO reuse, waiters, slots, timeouts, expiry."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator
from typing import TypeVar

import pytest

from mpp_proxy.core.errors import UpstreamTimeout
from mpp_proxy.core.pool import UpstreamPool
from mpp_proxy.core.upstream import UpstreamConnection, parse_origin
from tests.support.upstream import Upstream

T = TypeVar("T")


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


@pytest.fixture
def up() -> Iterator[Upstream]:
    with Upstream() as server:
        yield server


async def exchange(conn: UpstreamConnection, path: bytes = b"/echo") -> int:
    host = b"127.0.0.1"
    await conn.send_request(
        b"GET", path, [(b"host", host)], b"", chunked=False, end=True, timeout=5
    )
    status, _ = await conn.read_head(5)
    while not (await conn.read_body(5))[1]:
        pass
    return status


def test_most_recently_released_connection_is_reused_first(up: Upstream) -> None:
    async def main() -> None:
        pool = UpstreamPool(parse_origin(up.url), max_connections=3)
        conns = [await pool.acquire(5, 5) for _ in range(3)]
        for conn in conns:
            assert await exchange(conn) == 200
            pool.release(conn, reuse=True)
        assert (pool.idle, pool.in_use, pool.opened) == (3, 0, 3)
        assert await pool.acquire(5, 5) is conns[-1]
        assert await pool.acquire(5, 5) is conns[-2]
        await pool.close(grace=0)

    run(main())


def test_a_waiter_receives_the_released_connection(up: Upstream) -> None:
    async def main() -> None:
        pool = UpstreamPool(parse_origin(up.url), max_connections=1)
        first = await pool.acquire(5, 5)
        waiter = asyncio.create_task(pool.acquire(5, 5))
        await asyncio.sleep(0.01)
        assert not waiter.done()
        await exchange(first)
        pool.release(first, reuse=True)
        assert await waiter is first
        assert (pool.in_use, pool.opened) == (1, 1)
        pool.release(first, reuse=False)
        assert pool.in_use == 0

    run(main())


def test_a_discarded_connection_passes_its_slot_to_a_waiter(up: Upstream) -> None:
    async def main() -> None:
        pool = UpstreamPool(parse_origin(up.url), max_connections=1)
        first = await pool.acquire(5, 5)
        waiter = asyncio.create_task(pool.acquire(5, 5))
        await asyncio.sleep(0.01)
        pool.release(first, reuse=False)  # half-read, cancelled...: closed, not pooled
        second = await waiter
        assert second is not first
        assert (pool.in_use, pool.opened) == (1, 2)
        assert await exchange(second) == 200
        pool.release(second, reuse=True)
        assert (pool.in_use, pool.idle) == (0, 1)

    run(main())


def test_a_cancelled_waiter_leaks_no_slot(up: Upstream) -> None:
    async def main() -> None:
        pool = UpstreamPool(parse_origin(up.url), max_connections=1)
        first = await pool.acquire(5, 5)
        waiter = asyncio.create_task(pool.acquire(5, 5))
        await asyncio.sleep(0.01)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await exchange(first)
        pool.release(first, reuse=True)
        assert (pool.in_use, pool.idle) == (0, 1)
        assert await pool.acquire(5, 5) is first

    run(main())


def test_waiting_longer_than_the_pool_timeout_raises(up: Upstream) -> None:
    async def main() -> None:
        pool = UpstreamPool(parse_origin(up.url), max_connections=1)
        await pool.acquire(5, 5)
        with pytest.raises(UpstreamTimeout) as info:
            await pool.acquire(5, 0.05)
        assert info.value.phase == "pool"
        assert pool.in_use == 1

    run(main())


def test_idle_connections_expire(up: Upstream) -> None:
    async def main() -> None:
        pool = UpstreamPool(parse_origin(up.url), max_connections=2, idle_timeout=0.05)
        conn = await pool.acquire(5, 5)
        await exchange(conn)
        pool.release(conn, reuse=True)
        await asyncio.sleep(0.1)
        fresh = await pool.acquire(5, 5)
        assert fresh is not conn
        assert pool.opened == 2
        assert pool.idle == 0
        pool.release(fresh, reuse=False)

    run(main())
    assert up.wait_until(lambda u: u.connections_open == 0)


def test_an_incomplete_exchange_is_never_pooled(up: Upstream) -> None:
    async def main() -> None:
        pool = UpstreamPool(parse_origin(up.url), max_connections=2)
        conn = await pool.acquire(5, 5)
        await conn.send_request(
            b"GET", b"/bytes?n=1000000", [(b"host", b"x")], b"", chunked=False, end=True, timeout=5
        )
        await conn.read_head(5)
        await conn.read_body(5)  # some of the body only
        pool.release(conn, reuse=True)  # asked to reuse, but the exchange is not complete
        assert (pool.idle, pool.in_use) == (0, 0)

    run(main())
    assert up.wait_until(lambda u: u.connections_open == 0)


def test_reap_closes_expired_idle_connections_without_traffic(up: Upstream) -> None:
    async def main() -> None:
        pool = UpstreamPool(parse_origin(up.url), max_connections=2, idle_timeout=0.05)
        conn = await pool.acquire(5, 5)
        await exchange(conn)
        pool.release(conn, reuse=True)
        pool.reap()
        assert pool.idle == 1  # not yet expired
        await asyncio.sleep(0.1)
        pool.reap()
        assert pool.idle == 0

    run(main())
    assert up.wait_until(lambda u: u.connections_open == 0)
