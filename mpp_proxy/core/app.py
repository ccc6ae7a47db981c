"""The ASGI callable: reserved endpoints, routing, the payment gate and the streaming forward."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import orjson

from mpp_proxy.config.auth import auth_headers
from mpp_proxy.config.model import Config, Route, Service
from mpp_proxy.core import drain
from mpp_proxy.core.errors import (
    UpstreamAborted,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeout,
    UpstreamUnreachable,
    body_too_large,
    client_stalled,
)
from mpp_proxy.core.headers import RequestHeaderRules, ResponseHeaderRules
from mpp_proxy.core.pool import IDLE_TIMEOUT, UpstreamPool
from mpp_proxy.core.types import HeaderList, Message, Receive, Scope, Send
from mpp_proxy.core.upstream import UpstreamConnection, parse_origin
from mpp_proxy.discovery import llms_txt, openapi_document
from mpp_proxy.payments import Authorization, Denial, PaidRequest, PaymentGate
from mpp_proxy.problems import Problem, problem
from mpp_proxy.router import BadPath, Match, MatchResult, MethodNotAllowed, Router
from mpp_proxy.state import Store, open_store

# How much of a failed upstream body (status >= deliver_below) is kept for the credit record.
_FAILED_BODY_KEEP = 64 * 1024

_DISCOVERY_CACHE = (b"cache-control", b"public, max-age=300")
_NO_STORE = (b"cache-control", b"no-store")
_RESERVED_ALLOW = ((b"allow", b"GET, HEAD"),)


def _discovery(config: Config) -> tuple[bytes, bytes]:
    return orjson.dumps(openapi_document(config)), llms_txt(config).encode("utf-8")


def _auth_headers(service: Service) -> tuple[tuple[bytes, bytes], ...]:
    return auth_headers(service.auth)


class ServicePlan:
    """Everything the hot path needs for one service, computed once at load."""

    __slots__ = (
        "forward_ip",
        "id",
        "max_body",
        "origin",
        "pool",
        "request_rules",
        "response_rules",
        "service",
        "timeouts",
    )

    def __init__(self, service: Service) -> None:
        self.service = service
        self.id = service.id
        self.origin = parse_origin(service.base_url)
        self.pool = UpstreamPool(
            self.origin, max_connections=service.max_connections, ca_bundle=service.ca_bundle
        )
        self.request_rules = RequestHeaderRules(
            host=self.origin.host_header,
            auth=_auth_headers(service),
            strip=service.strip_headers,
        )
        self.response_rules = ResponseHeaderRules(service.strip_response_headers)
        self.timeouts = service.timeouts
        self.max_body = service.max_body_bytes
        self.forward_ip = service.forward_client_ip


# An exchange still running after this long starts listening for the client's disconnect.
# Most exchanges finish sooner and never pay for the listening task (~20 µs per request).
DISCONNECT_WATCH_DELAY = 0.05


class _DisconnectWatch:
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


async def _send_response(
    send: Send, status: int, headers: Any, body: bytes, head_only: bool = False
) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head_only else body})


async def _send_problem(send: Send, p: Problem, head_only: bool = False) -> None:
    await _send_response(send, p.status, p.headers, p.body, head_only)


class Proxy:
    """The gateway as a plain ASGI 3 application.

    `Proxy(config)` or `Proxy(**settings)` (built with `make_config`). Construction does no I/O;
    the lifespan startup (or, without lifespan, the first request that needs them) opens the
    store and the payment gate.
    """

    def __init__(
        self, config: Config | None = None, /, *, store: Store | None = None, **settings: Any
    ) -> None:
        if config is None:
            from mpp_proxy.config.python_api import make_config

            config = make_config(**settings)
        elif settings:
            raise TypeError("Proxy() takes a Config or keyword settings, not both")
        self.config = config
        self._router = Router.compile(config.services)
        self._plans = {s.id: ServicePlan(s) for s in config.services}
        self._openapi, self._llms = _discovery(config)
        # Both are built now (no I/O: config errors surface here) and opened at startup.
        self._store: Store = store if store is not None else open_store(config.proxy.state)
        has_paid = any(r.price is not None for s in config.services for r in s.routes)
        self._gate = PaymentGate(config, self._store) if has_paid else None
        self._started = False
        self._start_lock = asyncio.Lock()
        self._reaper: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def store(self) -> Store:
        return self._store

    def pool(self, service_id: str) -> UpstreamPool:
        """The connection pool of a service (for metrics and tests)."""
        return self._plans[service_id].pool

    async def startup(self) -> None:
        """Open the store, the payment gate and the pools. Idempotent."""
        if self._started:
            return
        async with self._start_lock:
            if self._started:
                return
            await self._store.open()
            if self._gate is not None:
                await self._gate.start()
            for plan in self._plans.values():
                plan.pool.start()
            self._reaper = asyncio.get_running_loop().create_task(
                self._reap_idle(), name="mpp-proxy idle upstream connections"
            )
            drain.watch()
            self._started = True

    async def _reap_idle(self) -> None:
        pools = [plan.pool for plan in self._plans.values()]
        while True:
            await asyncio.sleep(IDLE_TIMEOUT)
            for pool in pools:
                pool.reap()

    async def shutdown(self) -> None:
        """Drain the pools (in-flight exchanges get a grace period), then close gate and store."""
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        await asyncio.gather(*(plan.pool.close() for plan in self._plans.values()))
        if not self._started:
            return
        self._started = False
        if self._gate is not None:
            await self._gate.close()
        await self._store.close()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            kind = message["type"]
            if kind == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    text = f"mpp-proxy could not start: {type(exc).__name__}: {exc}"
                    await send({"type": "lifespan.startup.failed", "message": text})
                    return
                _settle_heap()
                await send({"type": "lifespan.startup.complete"})
            elif kind == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        raw: bytes | None = scope.get("raw_path")
        root: str = scope.get("root_path", "")
        if raw is None:
            path: str = scope["path"]
            if root and path.startswith(root):
                path = path[len(root) :] or "/"
            path = path.encode("utf-8").decode("latin-1")
        else:
            q = raw.find(b"?")
            if q >= 0:
                raw = raw[:q]
            if root:
                prefix = root.encode("utf-8")
                if raw.startswith(prefix) and raw[len(prefix) : len(prefix) + 1] in (b"", b"/"):
                    raw = raw[len(prefix) :] or b"/"
            path = raw.decode("latin-1")
        head_only = method == "HEAD"

        if path in _RESERVED:
            await self._reserved(path, method, send)
            return

        result = self._router.match(method, path)
        if not isinstance(result, Match):
            await _send_problem(send, self._routing_problem(result), head_only)
            return
        plan = self._plans[result.service.id]
        route: Route = result.route
        try:
            headers, content_length, chunked = plan.request_rules.apply(scope["headers"])
        except ValueError:
            await _send_problem(
                send,
                problem(400, "bad-request", "Bad request", "invalid content-length"),
                head_only,
            )
            return
        limit = route.max_body_bytes if route.max_body_bytes is not None else plan.max_body
        if content_length is not None and content_length > limit:
            await _send_problem(send, body_too_large(limit), head_only)
            return
        if plan.forward_ip:
            _add_forwarded(headers, scope)
        query: bytes = scope.get("query_string", b"")
        target = plan.origin.base_path + result.upstream_path.encode("latin-1")
        if query:
            target += b"?" + query

        if content_length or chunked:
            try:
                message = await _receive_within(receive, plan.timeouts.write)
            except TimeoutError:
                await _send_problem(send, client_stalled(plan.timeouts.write), head_only)
                return
        elif scope.get("http_version") in _HTTP1:
            # HTTP/1 without content-length or chunked: the body is empty (RFC 9112 6.3), so we
            # do not ask the server for it (a round trip into granian per request). A client that
            # already left is noticed by the disconnect watch instead.
            message = _EMPTY_BODY
        else:
            message = await receive()
        if message["type"] == "http.disconnect":
            return
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        if len(body) > limit:
            await _send_problem(send, body_too_large(limit), head_only)
            return

        auth: Authorization | None = None
        if route.price is not None:
            if more:
                whole, refused = await _read_whole(receive, body, limit, plan.timeouts.write)
                if refused is not None:
                    await _send_problem(send, refused, head_only)
                    return
                if whole is None:
                    return  # client disconnected
                body, more = whole, False
            if not self._started:
                try:
                    await self.startup()
                except Exception:
                    p = problem(
                        503,
                        "not-ready",
                        "Gateway not ready",
                        "the payment state store is unreachable; retry later",
                        headers=((b"retry-after", b"5"),),
                    )
                    await _send_problem(send, p, head_only)
                    return
            decision = await self._authorize(plan, route, method, path, query, scope, body)
            if isinstance(decision, Denial):
                await _send_response(
                    send, decision.status, decision.headers, decision.body, head_only
                )
                return
            auth = decision

        chunked = chunked or (content_length is None and more)
        if chunked:
            headers.append((b"transfer-encoding", b"chunked"))
        elif content_length is not None:
            headers.append((b"content-length", b"%d" % content_length))
        elif body:
            headers.append((b"content-length", b"%d" % len(body)))

        await self._exchange(
            plan, route, method, target, headers, body, more, chunked, limit, receive, send, auth
        )

    # ------------------------------------------------------------------ stages

    def _routing_problem(self, result: MatchResult) -> Problem:
        if isinstance(result, MethodNotAllowed):
            allow = ", ".join(result.allowed).encode("latin-1")
            return problem(
                405,
                "method-not-allowed",
                "Method not allowed",
                "this path does not accept this method",
                headers=((b"allow", allow),),
                allowed=list(result.allowed),
            )
        if isinstance(result, BadPath):
            return problem(400, "bad-path", "Bad path", result.reason)
        assert not isinstance(result, Match)
        return problem(404, "not-found", "Not found", result.reason)

    async def _reserved(self, path: str, method: str, send: Send) -> None:
        if method not in ("GET", "HEAD"):
            p = problem(
                405,
                "method-not-allowed",
                "Method not allowed",
                f"{path} accepts GET and HEAD",
                headers=_RESERVED_ALLOW,
            )
            await _send_problem(send, p)
            return
        head_only = method == "HEAD"
        if path == "/healthz":
            body = b'{"status":"ok"}'
            headers = [(b"content-type", b"application/json"), _NO_STORE]
            status = 200
        elif path == "/readyz":
            ready = not drain.draining() and await self._ready()
            body = b'{"status":"ready"}' if ready else b'{"status":"not ready"}'
            headers = [(b"content-type", b"application/json"), _NO_STORE]
            status = 200 if ready else 503
        elif path == "/openapi.json":
            body = self._openapi
            headers = [(b"content-type", b"application/json"), _DISCOVERY_CACHE]
            status = 200
        else:
            body = self._llms
            headers = [(b"content-type", b"text/markdown; charset=utf-8"), _DISCOVERY_CACHE]
            status = 200
        headers.append((b"content-length", b"%d" % len(body)))
        await _send_response(send, status, headers, body, head_only)

    async def _ready(self) -> bool:
        try:
            if not self._started:
                await self.startup()
            return bool(await self._store.ping())
        except Exception:
            return False

    async def _authorize(
        self,
        plan: ServicePlan,
        route: Route,
        method: str,
        path: str,
        query: bytes,
        scope: Scope,
        body: bytes,
    ) -> Authorization | Denial:
        assert self._gate is not None
        return await self._gate.authorize(
            PaidRequest(
                service=plan.service,
                route=route,
                method=method,
                path=path,
                query=query.decode("latin-1"),
                headers=scope["headers"],
                body=body,
            )
        )

    async def _exchange(
        self,
        plan: ServicePlan,
        route: Route,
        method: str,
        target: bytes,
        headers: HeaderList,
        body: bytes,
        more: bool,
        chunked: bool,
        limit: int,
        receive: Receive,
        send: Send,
        auth: Authorization | None,
    ) -> None:
        """Send the request upstream and stream the response back; account for paid requests.

        Exactly one of `auth.delivered()` / `auth.credit()` is called when `auth` is given.
        """
        pool = plan.pool
        t = plan.timeouts
        head_only = method == "HEAD"
        method_b = method.encode("ascii")
        conn: UpstreamConnection | None = None
        released = True
        watch: _DisconnectWatch | None = None
        status = 0
        head_sent = False
        replayed = False
        try:
            while True:
                conn = pool.acquire_idle() or await pool.acquire(t.connect, t.pool)
                released = False
                reused = conn.requests > 0
                sending = True
                try:
                    await conn.send_request(
                        method_b,
                        target,
                        headers,
                        body,
                        chunked=chunked,
                        end=not more,
                        timeout=t.write,
                    )
                    if more:
                        outcome = await _stream_request(conn, receive, len(body), limit, t.write)
                        if outcome is not None:
                            released = True
                            pool.release(conn, reuse=False)
                            if outcome == "too-large":
                                await _send_problem(send, body_too_large(limit), head_only)
                            elif outcome == "stalled":
                                await _send_problem(send, client_stalled(t.write), head_only)
                            return
                        await conn.end_body(t.write)
                    sending = False
                    if watch is None:
                        watch = _DisconnectWatch(receive, conn)
                    status, upstream_headers = await conn.read_head(t.read)
                    break
                except UpstreamProtocolError:
                    # A reused connection the upstream closed while it sat idle: replay once on a
                    # fresh connection, unless a non-idempotent request may have been processed.
                    if (
                        reused
                        and not more
                        and not replayed
                        and not conn.received_any
                        and (not conn.written or method in _IDEMPOTENT)
                    ):
                        replayed = True
                        released = True
                        pool.release(conn, reuse=False)
                        continue
                    if sending and conn.answered_early:
                        # The upstream answered (401, 413...) and closed before taking the whole
                        # body: its answer is the response, not our failed write.
                        if watch is None:
                            watch = _DisconnectWatch(receive, conn)
                        status, upstream_headers = await conn.read_head(t.read)
                        break
                    raise

            out = plan.response_rules.apply(upstream_headers)
            if auth is not None:
                if status >= route.deliver_below:
                    kept = await _read_some(conn, t.read, _FAILED_BODY_KEEP)
                    released = True
                    pool.release(conn, reuse=False)
                    watch.stop()
                    p = await auth.credit("upstream-status", status, kept)
                    await _send_problem(send, p, head_only)
                    return
                out.extend(auth.receipt_headers)
            await send({"type": "http.response.start", "status": status, "headers": out})
            head_sent = True
            while True:
                got = conn.read_body_now()  # a small body came with the head: no coroutine
                chunk, last = got if got is not None else await conn.read_body(t.read)
                if last:
                    watch.done = True
                    released = True
                    pool.release(conn, reuse=True)
                    await send({"type": "http.response.body", "body": chunk})
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UpstreamError as exc:
            if watch is not None:
                watch.stop()
            if not released and conn is not None:
                pool.release(conn, reuse=False)
            if head_sent:
                if auth is not None:
                    await auth.credit("upstream-aborted", status)
                raise UpstreamAborted(f"upstream of service '{plan.id}' failed mid-body") from None
            await self._fail_before_head(
                plan, exc.to_problem(plan.id), _reason(exc), send, head_only, auth
            )
            return
        except ValueError:
            if watch is not None:
                watch.stop()
            if not released and conn is not None:
                pool.release(conn, reuse=False)
            p = problem(400, "bad-request", "Bad request", "the request cannot be forwarded")
            await self._fail_before_head(plan, p, "bad-request", send, head_only, auth)
            return
        except asyncio.CancelledError:
            if not released and conn is not None:
                pool.release(conn, reuse=False)
            if watch is None or not watch.absorb():
                if watch is not None:
                    watch.stop()
                if auth is not None:
                    await asyncio.shield(auth.credit("cancelled", status or None))
                raise
            watch.stop()
            if auth is not None:
                await auth.credit("client-disconnected", status or None)
            return
        except BaseException:
            if watch is not None:
                watch.stop()
            if not released and conn is not None:
                pool.release(conn, reuse=False)
            if auth is not None:
                await auth.credit("proxy-error", status or None)
            raise
        watch.stop()
        if auth is not None:
            await auth.delivered()

    async def _fail_before_head(
        self,
        plan: ServicePlan,
        p: Problem,
        reason: str,
        send: Send,
        head_only: bool,
        auth: Authorization | None,
    ) -> None:
        """No head was sent yet: answer with the problem (paid: the gate's credit problem)."""
        if auth is not None:
            p = await auth.credit(reason, None)
        await _send_problem(send, p, head_only)


# Young objects collected at a time. Requests in flight keep ~15 tracked objects each alive
# through gen-0 collections, which collect nothing (the hot path creates no cycles) and promote
# them; the default 700 ran one every ~50 requests under granian at 64 connections.
_GC_GEN0_THRESHOLD = 10_000


def _settle_heap() -> None:
    """After startup, when we own the process (the ASGI server sent us lifespan events).

    Everything loaded so far (config, routes, pympp, granian) lives as long as the process:
    frozen, full collections stop re-scanning it. They ran every ~5k requests and cost ~14 ms each,
    ~3 µs per request (profile: gc_collect_main 6.7%).
    """
    gc.collect()
    gc.freeze()
    threshold0, threshold1, threshold2 = gc.get_threshold()
    if threshold0 and threshold0 < _GC_GEN0_THRESHOLD:
        gc.set_threshold(_GC_GEN0_THRESHOLD, threshold1, threshold2)


def _reason(exc: UpstreamError) -> str:
    if isinstance(exc, UpstreamTimeout):
        return "upstream-timeout"
    if isinstance(exc, UpstreamUnreachable):
        return "upstream-unreachable"
    return "upstream-protocol-error"


_RESERVED = frozenset({"/healthz", "/readyz", "/openapi.json", "/llms.txt"})
_HTTP1 = frozenset({"1.1", "1.0"})
_EMPTY_BODY: Message = {"type": "http.request", "body": b"", "more_body": False}
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def _add_forwarded(headers: HeaderList, scope: Scope) -> None:
    client = scope.get("client")
    scheme: str = scope.get("scheme", "http")
    if not client:
        return
    ip = str(client[0])
    node = f'"[{ip}]"' if ":" in ip else ip
    headers.append((b"x-forwarded-for", ip.encode("latin-1")))
    headers.append((b"x-forwarded-proto", scheme.encode("latin-1")))
    headers.append((b"forwarded", f"for={node};proto={scheme}".encode("latin-1")))


async def _read_whole(
    receive: Receive, body: bytes, limit: int, timeout: float
) -> tuple[bytes | None, Problem | None]:
    """Buffer the rest of the request body: (body, or None when the client left; refusal)."""
    parts = [body]
    size = len(body)
    while True:
        try:
            message = await _receive_within(receive, timeout)
        except TimeoutError:
            return None, client_stalled(timeout)
        if message["type"] == "http.disconnect":
            return None, None
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None, body_too_large(limit)
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts), None


async def _receive_within(receive: Receive, timeout: float) -> Message:
    """The next body message. Our server has no timeout for request bodies: without this, a
    client that stops sending mid-body would hold its task, buffer and upstream connection."""
    async with asyncio.timeout(timeout):
        message: Message = await receive()
    return message


async def _stream_request(
    conn: UpstreamConnection, receive: Receive, sent: int, limit: int, timeout: float
) -> str | None:
    """Forward the remaining request body chunks; 'too-large', 'stalled' or 'disconnected'
    stop it."""
    while True:
        try:
            message = await _receive_within(receive, timeout)
        except TimeoutError:
            return "stalled"
        if message["type"] == "http.disconnect":
            return "disconnected"
        chunk: bytes = message.get("body", b"")
        sent += len(chunk)
        if sent > limit:
            return "too-large"
        await conn.send_body(chunk, timeout)
        if not message.get("more_body", False):
            return None


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
