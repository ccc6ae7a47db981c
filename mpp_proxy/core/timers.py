"""Coarse per-loop timers: one periodic tick instead of a `call_later` per request wait."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Hashable

# How late a timer may fire. Timeouts are lower bounds: a 5 s read timeout fires within
# 5.00-5.05 s. uvloop's call_later + cancel costs ~1.6 µs; a request armed two of them (the
# disconnect watch and the wait for the response head), more than parsing the response.
TICK = 0.05


class CoarseTimers:
    """Callbacks due after a delay, checked every `TICK` seconds while any is armed.

    Arming and disarming are a dict insert and a dict pop; nothing ticks while none is armed.
    """

    __slots__ = ("__weakref__", "_armed", "_handle", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._armed: dict[Hashable, tuple[float, Callable[[], object]]] = {}
        self._handle: asyncio.TimerHandle | None = None

    def arm(self, key: Hashable, delay: float, callback: Callable[[], object]) -> None:
        """Run `callback` once, `delay` to `delay + TICK` seconds from now, unless disarmed."""
        self._armed[key] = (self._loop.time() + delay, callback)
        if self._handle is None:
            self._handle = self._loop.call_later(TICK, self._tick)

    def disarm(self, key: Hashable) -> None:
        self._armed.pop(key, None)

    def _tick(self) -> None:
        armed = self._armed
        now = self._loop.time()
        due = [key for key, (deadline, _) in armed.items() if deadline <= now]
        callbacks = [armed.pop(key)[1] for key in due]
        # Rescheduled before the callbacks run, so one that raises does not stop the ticking.
        self._handle = self._loop.call_later(TICK, self._tick) if armed else None
        for callback in callbacks:
            callback()


_BY_LOOP: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CoarseTimers] = (
    weakref.WeakKeyDictionary()
)


def timers_for(loop: asyncio.AbstractEventLoop) -> CoarseTimers:
    """The loop's timers (looked up once per upstream connection, not per request)."""
    timers = _BY_LOOP.get(loop)
    if timers is None:
        timers = _BY_LOOP[loop] = CoarseTimers(loop)
    return timers
