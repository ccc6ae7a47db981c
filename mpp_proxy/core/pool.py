"""Per-upstream LIFO pool of keep-alive connections with O(1) acquire and release, and the
request round trip over it (a request that meets a stale pooled connection is replayed here)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Protocol

from mpp_proxy.config.model import Timeouts
from mpp_proxy.core.errors import UpstreamProtocolError, UpstreamTimeout
from mpp_proxy.core.types import HeaderList
from mpp_proxy.core.upstream import Origin, UpstreamConnection, tls_context
from mpp_proxy.limits.capacity import hand_off

# Methods a request may be replayed with after its bytes reached a connection that then closed
# (RFC 9110 9.2.2): the upstream may have processed it, which is harmless only for these.
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE"})


class UpstreamRequest(Protocol):
    """What a round trip sends: the request head and its first (or only) body bytes."""

    @property
    def method_b(self) -> bytes: ...
    @property
    def target(self) -> bytes: ...
    @property
    def headers(self) -> HeaderList: ...
    @property
    def body(self) -> bytes: ...
    @property
    def chunked(self) -> bool: ...


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
    def waiting(self) -> int:
        """Requests waiting for a free slot."""
        return len(self._waiters)

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
            self._recycle(conn)
            return
        conn.abort()
        self._slot_freed()

    def put_back(self, conn: UpstreamConnection) -> None:
        """Give back a connection that was acquired but never used (the request was answered
        before it was forwarded)."""
        if not self._closed and conn.usable:
            self._recycle(conn)
            return
        conn.abort()
        self._slot_freed()

    async def reopen(self, conn: UpstreamConnection, connect_timeout: float) -> UpstreamConnection:
        """Drop `conn` and open a fresh connection in its slot: a replay never waits for the
        pool, so it cannot time out there."""
        conn.abort()
        try:
            return await self._open(connect_timeout)
        except BaseException:
            self._slot_freed()
            raise

    def _recycle(self, conn: UpstreamConnection) -> None:
        if hand_off(self._waiters, conn):
            return
        self.in_use -= 1
        now = conn.idle_since = time.monotonic()
        idle = self._idle
        if idle and now - idle[0].idle_since >= self.idle_timeout:
            self._expire(now)
        idle.append(conn)

    def _slot_freed(self) -> None:
        if not hand_off(self._waiters, None):
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

    # ------------------------------------------------------------------ round trips

    async def round_trip(
        self,
        req: UpstreamRequest,
        t: Timeouts,
        on_sent: Callable[[UpstreamConnection], None],
        first: UpstreamConnection | None = None,
    ) -> tuple[UpstreamConnection, int, HeaderList]:
        """Send a request whose whole body is in `req` and wait for the response head, on
        `first` (a connection the caller acquired, now ours) or one from the pool.

        A reused connection the upstream closed while it sat idle is noticed only now; the
        request is then replayed once on a fresh connection in the same slot, unless the
        upstream may have processed it (bytes arrived from it, or a non-idempotent request
        reached it). On failure the connection is dropped here; on success the caller holds it.
        """
        replayed = False
        conn = first or self.acquire_idle() or await self.acquire(t.connect, t.pool)
        while True:
            reused = conn.requests > 0
            try:
                try:
                    await _send(conn, req, t, end=True)
                except UpstreamProtocolError:
                    if not conn.answered_early or (reused and _replayable(conn, req, replayed)):
                        raise
                    # The upstream answered (401, 413...) and closed before taking the whole
                    # request: its answer is the response, not our failed write.
                on_sent(conn)
                status, headers = await conn.read_head(t.read)
                return conn, status, headers
            except UpstreamProtocolError:
                if not (reused and _replayable(conn, req, replayed)):
                    self.release(conn, reuse=False)
                    raise
                replayed = True
                conn = await self.reopen(conn, t.connect)
            except BaseException:
                self.release(conn, reuse=False)
                raise

    async def send_head(
        self, req: UpstreamRequest, t: Timeouts, first: UpstreamConnection | None = None
    ) -> UpstreamConnection:
        """Send a request's head and first body bytes (on `first`, as in round_trip); the
        caller streams the rest and holds the connection (no replay: the rest of the body is
        gone once sent). An upstream that answered early and closed is left for the caller to
        read (`answered_early`)."""
        conn = first or self.acquire_idle() or await self.acquire(t.connect, t.pool)
        try:
            await _send(conn, req, t, end=False)
        except UpstreamProtocolError:
            if not conn.answered_early:
                self.release(conn, reuse=False)
                raise
        except BaseException:
            self.release(conn, reuse=False)
            raise
        return conn


async def _send(conn: UpstreamConnection, req: UpstreamRequest, t: Timeouts, *, end: bool) -> None:
    await conn.send_request(
        req.method_b,
        req.target,
        req.headers,
        req.body,
        chunked=req.chunked,
        end=end,
        timeout=t.write,
    )


def _replayable(conn: UpstreamConnection, req: UpstreamRequest, replayed: bool) -> bool:
    """A reused connection failed: may the request go again on a fresh one?"""
    return (
        not replayed and not conn.received_any and (not conn.written or req.method_b in IDEMPOTENT)
    )
