"""A service's in-flight cap: at most `limit` requests at once, `queue` more waiting (FIFO) up
to `timeout`; beyond that a request is refused at once. Per worker process."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TypeVar

T = TypeVar("T")


class InFlight:
    """Slots with O(1) enter and leave; a freed slot goes to the oldest waiter."""

    __slots__ = ("_waiters", "active", "limit", "queue", "timeout")

    def __init__(self, limit: int, queue: int, timeout: float) -> None:
        self.limit = limit
        self.queue = queue
        self.timeout = timeout
        self.active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def try_enter(self) -> bool:
        """Take a slot without waiting, when one is free and nobody waits before us."""
        if self.active < self.limit and not self._waiters:
            self.active += 1
            return True
        return False

    async def enter(self) -> bool:
        """Take a slot, waiting in the queue if there is room; False when refused."""
        if self.try_enter():
            return True
        if len(self._waiters) >= self.queue:
            return False
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            async with asyncio.timeout(self.timeout):
                await fut
            return True
        except TimeoutError:
            # leave() may have handed us its slot in the very turn the timeout fired: keep it,
            # or the slot (still counted in `active`) would be lost.
            return fut.done() and not fut.cancelled()
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.leave()  # handed a slot, then cancelled: pass it on
            raise
        finally:
            # A waiter that got no slot leaves the queue now (the timeout cancelled its future
            # already), so the queue's bound counts only live waiters.
            if not fut.done():
                fut.cancel()
            if fut.cancelled():
                with contextlib.suppress(ValueError):
                    self._waiters.remove(fut)

    def leave(self) -> None:
        """Give a slot back: to the oldest waiter, else free."""
        if not hand_off(self._waiters, None):
            self.active -= 1


def hand_off(waiters: deque[asyncio.Future[T]], value: T) -> bool:
    """Give `value` (a freed slot) to the oldest waiter still waiting; False when none is.
    Shared with the upstream connection pool, whose waiters queue the same way."""
    while waiters:
        fut = waiters.popleft()
        if not fut.done():
            fut.set_result(value)
            return True
    return False
