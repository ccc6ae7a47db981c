"""Pool slots are never lost when a release and a pool-wait timeout land in the same loop turn.

Found by the slow-client tests: a stalled upload released its connection (write timeout) just
as a waiting request's pool timeout fired; the waiter dropped the slot it had been handed, and
the service stayed at 504 for good. Here the race is made deterministic on a real connection.
"""

from __future__ import annotations

import asyncio
import functools
import time

from mpp_proxy.core.pool import UpstreamPool
from mpp_proxy.core.upstream import parse_origin
from tests.support.upstream import Upstream


def test_a_slot_released_as_the_pool_wait_times_out_is_not_leaked() -> None:
    async def main() -> None:
        with Upstream() as up:
            pool = UpstreamPool(parse_origin(up.url), max_connections=1)
            held = await pool.acquire(2, 2)
            waiter = asyncio.create_task(pool.acquire(2, 0.2))
            await asyncio.sleep(0)  # the waiter queues with its 0.2 s pool timeout
            loop = asyncio.get_running_loop()
            loop.call_at(loop.time() + 0.1, functools.partial(pool.release, held, reuse=False))
            # Block the loop past both deadlines: the release and the timeout then run in one
            # turn, release first, before the waiter resumes.
            time.sleep(0.3)
            try:
                got = await waiter
            except Exception:
                got = None
            if got is not None:
                pool.release(got, reuse=False)
            # Whatever the waiter made of it, the one slot is free again.
            assert pool.in_use == 0
            await asyncio.wait_for(pool.acquire(2, 0.5), 5)
            await pool.close(grace=0)

    asyncio.run(main())
