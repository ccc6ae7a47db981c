"""The ASGI callable: lifecycle, and the chain every request runs.

    reserved -> match -> intake -> admit -> pay -> forward (-> respond -> account)

Each stage answers (a problem) or hands the request on; the chain runs them in this fixed order
and nothing else. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from time import perf_counter_ns
from typing import Any

from mpp_proxy import __version__
from mpp_proxy.config.model import Config
from mpp_proxy.core import account, drain
from mpp_proxy.core.admin import AdminAPI, Reload
from mpp_proxy.core.admit import admit, admit_now
from mpp_proxy.core.errors import ClientGone, ProxyFailure
from mpp_proxy.core.exchange import Exchange
from mpp_proxy.core.intake import intake, receive_first
from mpp_proxy.core.pay import pay
from mpp_proxy.core.plan import Planner, RoutePlan
from mpp_proxy.core.pool import IDLE_TIMEOUT, UpstreamPool
from mpp_proxy.core.request_id import request_id_of
from mpp_proxy.core.reserved import ReservedPaths
from mpp_proxy.core.types import Receive, Scope, Send
from mpp_proxy.observe import Events, Observer
from mpp_proxy.payments import PaymentGate
from mpp_proxy.problems import Problem, problem, with_instance
from mpp_proxy.router import BadPath, Match, MatchResult, MethodNotAllowed, Router
from mpp_proxy.state import Store, open_store

log = logging.getLogger("mpp_proxy.core")

# Without lifespan (a mounted app), a failed opening is tried again after this long.
_REOPEN_AFTER = 1.0


class Proxy:
    """The gateway as a plain ASGI 3 application.

    `Proxy(config)` or `Proxy(**settings)` (built with `make_config`). Construction does no I/O;
    the lifespan startup opens the store, the payment gate and the pools. Served without
    lifespan, the first request opens them, once.
    """

    def __init__(
        self,
        config: Config | None = None,
        /,
        *,
        store: Store | None = None,
        reload: Reload | None = None,
        **settings: Any,
    ) -> None:
        if config is None:
            from mpp_proxy.config.python_api import make_config

            config = make_config(**settings)
        elif settings:
            raise TypeError("Proxy() takes a Config or keyword settings, not both")
        self.config = config
        # Built now (no I/O: config errors surface here), opened at startup.
        self._store: Store = store if store is not None else open_store(config.proxy.state)
        has_paid = any(r.price is not None for s in config.services for r in s.routes)
        self._gate = PaymentGate(config, self._store) if has_paid else None
        planner = Planner(config.services, self._gate, self._store, config.proxy, config.methods)
        self._router: Router[RoutePlan] = Router.compile(config.services, planner)
        self._services = planner.services
        self._observer = Observer(config, self._store, version=__version__, pympp=_pympp_version())
        metrics = self._observer.metrics
        if metrics is not None:
            metrics.pools = self._pool_readings
        counts_money = metrics is not None or self._observer.webhooks is not None
        if self._gate is not None and counts_money:
            self._gate.ledger.on_forfeit = self._observer.forfeited
        self._metrics_path = config.observe.metrics.path if metrics is not None else None
        admin = config.proxy.admin
        api = AdminAPI(admin, config, self._store, reload) if admin is not None else None
        if api is not None and counts_money:
            api.on_void = self._observer.voided
        self._reserved = ReservedPaths(
            config,
            __version__,
            self._ready,
            api,
            metrics=(config.observe.metrics.path, self._observer.exposition) if metrics else None,
        )
        self._started = False
        self._start_lock = asyncio.Lock()
        self._reaper: asyncio.Task[None] | None = None
        self._reopen_at = 0.0
        # Requests go to _serve once open; until then (no lifespan) through _open_then_serve.
        self._entry = self._open_then_serve

    # ------------------------------------------------------------------ lifecycle

    @property
    def store(self) -> Store:
        return self._store

    def pool(self, service_id: str) -> UpstreamPool:
        """The connection pool of a service (for metrics and tests)."""
        return self._services[service_id].pool

    @property
    def events(self) -> Events:
        """`proxy.events.subscribe(handler)`: typed events for each finished request."""
        return self._observer.events

    @property
    def observer(self) -> Observer:
        return self._observer

    def _pool_readings(self) -> list[tuple[str, int, int, int]]:
        return [
            (sid, p.pool.idle, p.pool.in_use, p.pool.waiting) for sid, p in self._services.items()
        ]

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
            for plan in self._services.values():
                plan.pool.start()
            self._reaper = asyncio.get_running_loop().create_task(
                self._reap_idle(), name="mpp-proxy idle upstream connections"
            )
            drain.watch()
            await self._observer.start()
            self._started = True
            self._entry = self._serve

    async def _reap_idle(self) -> None:
        pools = [plan.pool for plan in self._services.values()]
        while True:
            await asyncio.sleep(IDLE_TIMEOUT)
            for pool in pools:
                pool.reap()

    async def shutdown(self) -> None:
        """Drain the pools (in-flight exchanges get a grace period), then close gate and store."""
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        await asyncio.gather(*(plan.pool.close() for plan in self._services.values()))
        if not self._started:
            return
        self._started = False
        self._entry = self._open_then_serve
        await self._observer.stop()
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

    async def _open_then_serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Served without lifespan: open on the first request (and again, now and then, while
        the store cannot be opened); free routes are served meanwhile, paid ones answer 503."""
        now = time.monotonic()
        if now >= self._reopen_at:
            try:
                await self.startup()
            except Exception as exc:
                self._reopen_at = now + _REOPEN_AFTER
                log.warning("mpp-proxy could not open its state store: %s", type(exc).__name__)
        await self._serve(scope, receive, send)

    async def _ready(self) -> bool:
        if drain.draining():
            return False  # shutting down: the balancer stops sending while we finish
        try:
            return self._started and bool(await self._store.ping())
        except Exception:
            return False

    # ------------------------------------------------------------------ the chain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._entry(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "websocket":
            await send({"type": "websocket.close", "code": 1008})

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = request_path(scope)
        if (path in self._reserved.handlers or path.startswith("/admin/")) and await self._own(
            path, scope, receive, send
        ):
            return
        method: str = scope["method"]
        result = self._router.match(method, path)
        if not isinstance(result, Match):
            await self._unrouted(scope, send, path, result)
            return
        plan = result.plan
        ex = Exchange(scope, receive, send, plan, method, path, result.upstream_path)
        observer = self._observer
        watching = observer.on
        if watching:  # a matched request begins: counted, its start taken
            observer.arrivals += 1
            ex.started = perf_counter_ns()
            if observer.tracing is not None:
                account.trace(observer.tracing, ex)
        try:
            answer = intake(ex)
            if answer is None:
                if ex.reader is not None or plan.staged:
                    answer = await self._stages(ex)
                elif plan.quick is not None:
                    answer = admit_now(ex, plan.quick)  # one in-process limit: no coroutine
            if answer is None:
                await ex.forward()
            elif answer is not _NOBODY:
                await ex.answer(answer)
        except BaseException:
            self._ended_abruptly(ex, watching)
            raise
        finally:
            ex.end()
        if watching and (owed := account.finished(observer, ex)) is not None:
            await observer.paid(owed)  # its webhooks, queued in the store

    async def _own(self, path: str, scope: Scope, receive: Receive, send: Send) -> bool:
        """A reserved path (/metrics for allowed clients only) or the admin API answered; False
        when the request is not ours after all: it goes to the router as any unknown path."""
        reserved = self._reserved.handlers.get(path)
        if reserved is not None and self._may_serve(path, scope):
            await self._reserved.serve(reserved, path, scope, send)
            return True
        admin = self._reserved.admin
        # Anyone the admin API does not let in gets what any unknown path gets, from the router.
        return (
            admin is not None
            and path.startswith("/admin/")
            and await admin.handle(scope, receive, send, path)
        )

    async def _stages(self, ex: Exchange) -> Problem | None:
        """After intake: the body's first message, admit, pay (each when the route has it)."""
        plan = ex.plan
        try:
            answer = None
            if ex.reader is not None:
                await receive_first(ex)
            if plan.limits is not None:
                quick = plan.quick
                answer = await admit(ex) if quick is None else admit_now(ex, quick)
            if answer is None and plan.offers is not None:
                answer = await self._pay(ex)
        except ClientGone:
            ex.error = ClientGone.kind
            return _NOBODY
        except ProxyFailure as failure:
            ex.error = failure.kind
            return failure.problem(plan.service.id)
        return answer

    def _ended_abruptly(self, ex: Exchange, watching: bool) -> None:
        """The chain raised (a bug, or the server cancelled it): still accounted for."""
        if watching:
            owed = account.finished(self._observer, ex)
            if owed is not None:
                self._observer.paid_later(owed)

    async def _pay(self, ex: Exchange) -> Problem | None:
        assert self._gate is not None
        trace = ex.trace
        if trace is None:
            return await pay(ex, self._gate)
        trace.begin_payment()
        answer = await pay(ex, self._gate)
        trace.end_payment(answer.status if answer is not None else None)
        return answer

    async def _unrouted(self, scope: Scope, send: Send, path: str, result: MatchResult) -> None:
        """The router's own answer (404, 405, 400), before any stage ran."""
        observer = self._observer
        started = observer.arrived() if observer.on else None
        p = routing_problem(result)
        rid = request_id_of(scope["headers"])
        try:
            await _send_problem(send, p, rid, scope["method"] == "HEAD")
        finally:
            if started is not None:
                account.unrouted(observer, scope, path, p, rid, started)

    def _may_serve(self, path: str, scope: Scope) -> bool:
        """Every reserved path is public but /metrics, which is for allowed clients only."""
        if path != self._metrics_path:
            return True
        client = scope.get("client")
        return self._observer.access.allows(client[0] if client else None, scope["headers"])


# The chain's "answer" when the client left: there is nobody to send anything to.
_NOBODY = problem(499, "client-gone", "Client gone")


def _pympp_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pympp")
    except PackageNotFoundError:
        return "unknown"


def request_path(scope: Scope) -> str:
    """The raw request path (latin-1 text) below the mount point, without the query."""
    raw: bytes | None = scope.get("raw_path")
    root: str = scope.get("root_path", "")
    if raw is None:
        path: str = scope["path"]
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        return path.encode("utf-8").decode("latin-1")
    q = raw.find(b"?")
    if q >= 0:
        raw = raw[:q]
    if root:
        prefix = root.encode("utf-8")
        if raw.startswith(prefix) and raw[len(prefix) : len(prefix) + 1] in (b"", b"/"):
            raw = raw[len(prefix) :] or b"/"
    return raw.decode("latin-1")


def routing_problem(result: MatchResult) -> Problem:
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


async def _send_problem(send: Send, p: Problem, request_id: bytes, head_only: bool) -> None:
    headers, body = with_instance(p, request_id)
    await send({"type": "http.response.start", "status": p.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head_only else body})


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
