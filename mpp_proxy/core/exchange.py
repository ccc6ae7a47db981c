"""One request's trip through the chain: its state, and the forward and respond stages.

An Exchange is made per matched request. The stages before forward fill it (intake: the
client address, the upstream head and body framing; admit: the admission and, for a paid
request, its upstream connection; pay: the authorization); forward sends it upstream and
streams the answer back. It owns the upstream connection from the moment the pool hands it
over and gives it back exactly once; the chain calls `end` when the request is over.
"""

from __future__ import annotations

import asyncio
from time import monotonic, perf_counter_ns
from typing import TYPE_CHECKING

from mpp_proxy.core import account
from mpp_proxy.core.body import RequestBody
from mpp_proxy.core.disconnect import DisconnectWatch
from mpp_proxy.core.errors import (
    ClientGone,
    ProxyFailure,
    UpstreamAborted,
    UpstreamError,
    UpstreamProtocolError,
    upstream_answered,
)
from mpp_proxy.core.plan import RoutePlan
from mpp_proxy.core.request_id import request_id_of
from mpp_proxy.core.settle import settle
from mpp_proxy.core.types import HeaderList, Receive, Scope, Send
from mpp_proxy.core.upstream import UpstreamConnection
from mpp_proxy.limits import Admission
from mpp_proxy.payments import Authorization, NotDelivered
from mpp_proxy.problems import Headers, Problem, with_instance

if TYPE_CHECKING:
    from mpp_proxy.observe.tracing import Trace

# How much of a failed upstream body (status >= deliver_below) is kept for the credit record.
FAILED_BODY_KEEP = 64 * 1024


class Exchange:
    """Per-request state, shared by the stages; the forward stage's own steps as methods."""

    __slots__ = (
        "admission",
        "answered",
        "auth",
        "body",
        "bytes_out",
        "chunked",
        "client",
        "conn",
        "content_length",
        "error",
        "extra",
        "head_only",
        "head_sent",
        "headers",
        "idempotency",
        "method",
        "method_b",
        "more",
        "path",
        "payment",
        "plan",
        "problem",
        "reader",
        "receive",
        "request_id",
        "reusable",
        "scope",
        "send",
        "started",
        "status",
        "target",
        "trace",
        "upstream_path",
        "upstream_us",
        "watch",
    )

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        plan: RoutePlan,
        method: str,
        path: str,
        upstream_path: str,
    ) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.plan = plan
        self.method = method
        self.head_only = method == "HEAD"
        self.path = path
        self.upstream_path = upstream_path
        # Filled by intake: the client address, the upstream request head, its first body
        # bytes and framing.
        self.client = ""
        self.method_b = b""
        self.target = b""
        self.headers: HeaderList = []
        self.body = b""
        self.more = False
        self.chunked = False
        self.content_length: int | None = None
        self.reader: RequestBody | None = None
        self.payment: list[tuple[bytes, bytes]] | None = None  # captured payment headers
        self.idempotency: str | None = None  # a paid request's Idempotency-Key
        self.auth: Authorization | None = None  # set by the pay stage
        self.admission: Admission | None = None  # set by the admit stage
        self.extra: Headers = ()  # headers every answer carries (the RateLimit fields)
        self.conn: UpstreamConnection | None = None
        self.watch: DisconnectWatch | None = None
        self.status = 0  # the upstream's status once its head arrived
        self.head_sent = False
        self.reusable = False
        # What the account stage reads (filled as the request goes; cheap when nobody reads).
        self.request_id = b""  # decided by intake
        self.started = 0  # perf_counter_ns at arrival, when the app observes requests
        self.upstream_us: int | None = None  # microseconds to the upstream's head
        self.answered = 0  # the status the client was sent
        self.bytes_out = 0
        self.error = ""  # the kind of the failure that ended the request
        self.problem: Problem | None = None  # our own answer, when we gave one
        self.trace: Trace | None = None

    async def answer(self, p: Problem) -> None:
        """Answer with a problem of our own (nothing was sent yet)."""
        self.answered = p.status
        self.problem = p
        headers, body = with_instance(p, self.request_id or request_id_of(self.scope["headers"]))
        if self.head_only:
            body = b""
        self.bytes_out = len(body)
        if self.extra:
            headers = [*headers, *self.extra]
        await self.send({"type": "http.response.start", "status": p.status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body})

    def end(self) -> None:
        """The request is over: what admit took is given back (exactly once). A connection
        still held was never used (the request was answered before forward)."""
        conn = self.conn
        if conn is not None:
            self.conn = None
            self.plan.service.pool.put_back(conn)
        admission = self.admission
        if admission is not None:
            self.admission = None
            admission.release()

    # ------------------------------------------------------------------ forward

    async def forward(self) -> None:
        """Send the request upstream, stream the response back, account for the outcome."""
        trace = self.trace
        if trace is not None:
            trace.begin_upstream(self.headers, self.plan.service.origin.host)
        try:
            started = perf_counter_ns() if self.started else 0
            status, headers = await self._upstream_head()
            self.status = status
            if started:
                self.upstream_us = (perf_counter_ns() - started) // 1000
            await self._respond(status, headers)
        except ProxyFailure as failure:
            self._stop()
            await self._failed(failure)
        except asyncio.CancelledError:
            if not await self._cancelled():
                raise
        except BaseException:
            # Not a failure we know: a bug, or the server's own error from send(). The server
            # logs it and answers 500 (or resets the response); the payment is kept.
            self._stop()
            await account.aborted(self.auth, ProxyFailure().not_delivered(self.status or None))
            raise
        finally:
            self._stop()

    async def _upstream_head(self) -> tuple[int, HeaderList]:
        admission = self.admission
        if admission is None or not admission.times_upstream:
            return await self._exchange_head()
        start = monotonic()
        try:
            head = await self._exchange_head()
        except UpstreamError:
            admission.observe(monotonic() - start)
            raise
        admission.observe(monotonic() - start)
        return head

    async def _exchange_head(self) -> tuple[int, HeaderList]:
        """The response head; the request body is streamed up first when it did not all come
        with the request head. A connection taken at admit is used first."""
        sp = self.plan.service
        t = sp.timeouts
        first, self.conn = self.conn, None  # the pool call owns it now, and drops it on failure
        if not self.more:
            conn, status, headers = await sp.pool.round_trip(self, t, self._watch, first)
            self.conn = conn
            return status, headers
        conn = self.conn = await sp.pool.send_head(self, t, first)
        self.body = b""  # sent: not held for the rest of the exchange (no replay of a stream)
        self._watch(conn)
        reader = self.reader
        assert reader is not None
        try:
            await reader.stream_to(conn)
        except UpstreamProtocolError:
            if not conn.answered_early:
                raise
        return await conn.read_head(t.read)

    def _watch(self, conn: UpstreamConnection) -> None:
        if self.watch is None:
            self.watch = DisconnectWatch(self.receive, conn)

    async def _respond(self, status: int, upstream: HeaderList) -> None:
        """The head (with the receipt when paid and settled), then the body as it comes."""
        out = self.plan.service.response_rules.apply(upstream)
        if self.extra:
            out.extend(self.extra)
        auth = self.auth
        if auth is not None:
            if status >= self.plan.deliver_below:
                await self._not_delivered(status)
                return
            refused = await self._settle(auth)
            if refused is not None:
                self._stop()  # the upstream's answer is not delivered: its connection closes
                await self.answer(refused)
                return
            out.extend(auth.receipt_headers)
        out.append((b"x-request-id", self.request_id))
        await self.send({"type": "http.response.start", "status": status, "headers": out})
        self.head_sent = True
        self.answered = status
        await self._stream_body(status, out)

    async def _settle(self, auth: Authorization) -> Problem | None:
        trace = self.trace
        if trace is None or auth.settled:
            return await settle(auth)
        trace.begin_payment("mpp.settlement")
        refused = await settle(auth)
        trace.end_payment(refused.status if refused is not None else None)
        return refused

    async def _stream_body(self, status: int, out: HeaderList) -> None:
        """The upstream's body as it arrives; a paid one is recorded as delivered (with what a
        replay of it needs) before its last byte goes out, so a client that has the whole
        response also finds the payment delivered in the ledger."""
        conn = self.conn
        assert conn is not None
        send = self.send
        auth = self.auth
        timeout = self.plan.service.timeouts.read
        kept = Kept(auth.replay.max_bytes) if auth is not None and auth.replay else None
        while True:
            got = conn.read_body_now()  # a small body came with the head: no coroutine
            chunk, last = got if got is not None else await conn.read_body(timeout)
            self.bytes_out += len(chunk)
            if kept is not None:
                kept.add(chunk)
            if last:
                self.reusable = True
                self._release()
                if auth is not None:
                    self._stop()
                    response = None if kept is None else (status, tuple(out), kept.body())
                    await account.delivered(auth, response)
                    if self.admission is not None:
                        await self.admission.delivered(auth.payment)
                await send({"type": "http.response.body", "body": chunk})
                return
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def _not_delivered(self, status: int) -> None:
        """A paid request the upstream answered with a failure: credit, and say so."""
        conn = self.conn
        assert conn is not None
        kept = await _read_some(conn, self.plan.service.timeouts.read, FAILED_BODY_KEEP)
        self._stop()
        await self.answer(await account.undelivered(self.auth, upstream_answered(status, kept)))

    # ------------------------------------------------------------------ failures

    async def _failed(self, failure: ProxyFailure) -> None:
        sid = self.plan.service.id
        self.error = failure.kind
        if self.head_sent:
            if isinstance(failure, UpstreamError):
                self.error = "reset"  # the upstream died mid-body
            await account.aborted(self.auth, NotDelivered("upstream-aborted", 502, self.status))
            raise UpstreamAborted(f"upstream of service '{sid}' failed mid-body") from None
        why = failure.not_delivered(self.status or None)
        if isinstance(failure, ClientGone):
            await account.aborted(self.auth, why)
            return
        await self.answer(await account.undelivered(self.auth, why, failure.problem(sid)))

    async def _cancelled(self) -> bool:
        """Cancelled: by our disconnect watch (the client left: True, absorbed) or by the
        server (shutting down: False, to be re-raised). The payment is kept either way."""
        watch = self.watch
        self._release()
        if watch is not None and watch.absorb():
            self.error = ClientGone.kind
            watch.stop()
            await account.aborted(self.auth, ClientGone().not_delivered(self.status or None))
            return True
        self._stop()
        why = NotDelivered("cancelled", 503, self.status or None)
        await asyncio.shield(account.aborted(self.auth, why))
        return False

    # ------------------------------------------------------------------ the lease

    def _release(self) -> None:
        """Give the connection back, reusable only after a complete exchange. Exactly once."""
        conn = self.conn
        if conn is not None:
            self.conn = None
            self.plan.service.pool.release(conn, reuse=self.reusable)

    def _stop(self) -> None:
        self._release()
        if self.watch is not None:
            self.watch.stop()


class Kept:
    """A delivered response body kept for idempotent retries, up to a limit."""

    __slots__ = ("limit", "parts", "size")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[bytes] = []
        self.size = 0

    def add(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size <= self.limit:
            self.parts.append(chunk)
        else:
            self.parts = []

    def body(self) -> bytes | None:
        """The whole body, or None when it was over the limit."""
        return b"".join(self.parts) if self.size <= self.limit else None


async def _read_some(conn: UpstreamConnection, timeout: float, keep: int) -> bytes:
    """Up to `keep` bytes of a response body (the connection is discarded afterwards)."""
    parts: list[bytes] = []
    size = 0
    try:
        while size < keep:
            chunk, last = await conn.read_body(timeout)
            parts.append(chunk)
            size += len(chunk)
            if last:
                break
    except UpstreamError:
        pass
    return b"".join(parts)[:keep]
