"""Per-upstream LIFO pool of keep-alive connections with O(1) acquire and release."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque

from mpp_proxy.core.errors import UpstreamTimeout
from mpp_proxy.core.upstream import Origin, UpstreamConnection, tls_context

# Idle connections older than this are closed instead of reused: most servers drop idle
# keep-alive connections after 5-75 s and a reused dead connection costs a failed request.
IDLE_TIMEOUT = 4.0


class UpstreamPool:
    """Connections to one origin. The most recently used idle connection is reused first (LIFO),
    so a burst warms few connections and the rest expire; waiting requests are served FIFO.
    """

    __slots__ = (
        "_closed",
        "_idle",
        "_ssl",
        "_waiters",
        "ca_bundle",
        "idle_timeout",
        "in_use",
        "max_connections",
        "opened",
        "origin",
    )

    def __init__(
        self,
        origin: Origin,
        *,
        max_connections: int = 100,
        idle_timeout: float = IDLE_TIMEOUT,
        ca_bundle: str | None = None,
    ) -> None:
        self.origin = origin
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.ca_bundle = ca_bundle
        self._idle: deque[UpstreamConnection] = deque()
        # Waiters receive a connection to reuse, or None: "a slot is free, open your own".
        self._waiters: deque[asyncio.Future[UpstreamConnection | None]] = deque()
        self._ssl: ssl.SSLContext | None = None
        self._closed = False
        self.in_use = 0
        self.opened = 0  # connections ever opened (for tests and metrics)

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def size(self) -> int:
        return self.in_use + len(self._idle)

    def start(self) -> None:
        """Load the TLS context (reads CA files): done at startup, not at construction."""
        if self.origin.tls and self._ssl is None:
            self._ssl = tls_context(self.ca_bundle)

    def acquire_idle(self) -> UpstreamConnection | None:
        """A reusable idle connection, or None: the usual case, without a coroutine."""
        idle = self._idle
        if idle:
            now = time.monotonic()
            while idle:
                conn = idle.pop()
                if conn.usable and now - conn.idle_since < self.idle_timeout:
                    self.in_use += 1
                    return conn
                conn.close()
            self._expire(now)
        return None

    async def acquire(self, connect_timeout: float, pool_timeout: float) -> UpstreamConnection:
        conn = self.acquire_idle()
        if conn is not None:
            return conn
        if self.in_use >= self.max_connections:
            got = await self._wait(pool_timeout)
            if got is not None:
                return got  # in_use was carried over by release()
        else:
            self.in_use += 1
        try:
            return await self._open(connect_timeout)
        except BaseException:
            self._slot_freed()
            raise

    async def _open(self, connect_timeout: float) -> UpstreamConnection:
        if self.origin.tls and self._ssl is None:
            self.start()
        conn = await UpstreamConnection.open(self.origin, self._ssl, connect_timeout)
        self.opened += 1
        return conn

    async def _wait(self, timeout: float) -> UpstreamConnection | None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[UpstreamConnection | None] = loop.create_future()
        self._waiters.append(fut)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            if fut.done() and not fut.cancelled():
                # release() handed us its slot in the same loop turn as the timeout fired:
                # use it, or the slot (counted in in_use) would leak for good.
                return fut.result()
            raise UpstreamTimeout("pool") from None
        except BaseException:
            # Cancelled after release() handed us something: pass it on.
            if fut.done() and not fut.cancelled():
                conn = fut.result()
                if conn is None:
                    self._slot_freed()
                else:
                    self.release(conn, reuse=True)
            raise
        finally:
            if not fut.done():
                fut.cancel()

    def release(self, conn: UpstreamConnection, *, reuse: bool) -> None:
        """Give back a connection; `reuse` only after a complete, clean exchange."""
        if reuse and not self._closed and conn.finish():
            waiters = self._waiters
            while waiters:
                fut = waiters.popleft()
                if not fut.done():
                    fut.set_result(conn)
                    return
            self.in_use -= 1
            now = conn.idle_since = time.monotonic()
            idle = self._idle
            if idle and now - idle[0].idle_since >= self.idle_timeout:
                self._expire(now)
            idle.append(conn)
            return
        conn.abort()
        self._slot_freed()

    def _slot_freed(self) -> None:
        waiters = self._waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.in_use -= 1

    def reap(self) -> None:
        """Close idle connections past their time (a timer calls this while traffic is idle)."""
        self._expire(time.monotonic())

    def _expire(self, now: float) -> None:
        idle = self._idle
        while idle and (now - idle[0].idle_since >= self.idle_timeout or not idle[0].usable):
            idle.popleft().close()

    async def close(self, grace: float = 5.0) -> None:
        """Close idle connections, wait up to `grace` for in-flight ones, then stop reusing."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()
        deadline = time.monotonic() + grace
        while self.in_use and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
