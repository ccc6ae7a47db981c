"""Noticing a client that leaves while its request waits on the upstream."""

from __future__ import annotations

import asyncio

from mpp_proxy.core.types import Receive
from mpp_proxy.core.upstream import UpstreamConnection

# An exchange still running after this long starts listening for the client's disconnect.
# Most exchanges finish sooner and never pay for the listening task (~20 µs per request).
DISCONNECT_WATCH_DELAY = 0.05


class DisconnectWatch:
    """Cancels the request when the client disconnects while the upstream exchange runs."""

    __slots__ = ("_loop", "_receive", "_task", "_timers", "_watcher", "done", "fired")

    def __init__(self, receive: Receive, conn: UpstreamConnection) -> None:
        self.fired = False
        self.done = False
        # The connection's loop is the running one: current_task(loop) skips the getpid()
        # syscall of get_running_loop().
        self._loop = loop = conn.loop
        task = asyncio.current_task(loop)
        assert task is not None
        self._task = task
        self._receive = receive
        self._watcher: asyncio.Task[None] | None = None
        self._timers = conn.timers
        conn.timers.arm(self, DISCONNECT_WATCH_DELAY, self._start)

    def _start(self) -> None:
        if not self.done:
            self._watcher = self._loop.create_task(self._run())

    async def _run(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                if not self.done:
                    self.fired = True
                    self._task.cancel()
                return

    def stop(self) -> None:
        self.done = True
        self._timers.disarm(self)
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    def absorb(self) -> bool:
        """After CancelledError: True (and un-cancel) when our disconnect watch caused it."""
        if self.fired:
            self._task.uncancel()
            return True
        return False
