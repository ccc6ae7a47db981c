"""Payment test harness: configs in code, a memory store, the gate fed PaidRequest objects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from decimal import Decimal
from typing import Any, TypeVar

from mpp_proxy.config.model import (
    Config,
    PaymentMethod,
    Price,
    ProxySettings,
    Route,
    Secret,
    Service,
    TestMoneyMethod,
)
from mpp_proxy.core.errors import (
    ClientGone,
    ProxyFailure,
    Unforwardable,
    UpstreamTimeout,
    UpstreamUnreachable,
    upstream_answered,
)
from mpp_proxy.payments import Authorization, NotDelivered, PaidRequest, PaymentGate
from mpp_proxy.problems import Problem
from mpp_proxy.state import Store, open_store

T = TypeVar("T")

SECRET = "payments-test-secret-0123456789abcdef"
REALM = "api.test"
UPSTREAM_KEY = "sk-upstream-key-never-shown-42"


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def settings(**overrides: Any) -> ProxySettings:
    base = ProxySettings(
        secret_key=Secret(SECRET),
        realm=REALM,
        state="memory://",
        allow_test_payments=True,
    )
    return replace(base, **overrides)


def paid(method: str, pattern: str, price: str, *pay_with: str, **kw: Any) -> Route:
    """A paid route. The gate alone (no upstream) is tested settling before forwarding unless a
    test asks for `settle="after"`: then `Authorization.settle()` plays the success head."""
    kw.setdefault("settle", "before")
    return Route(method, pattern, Price(Decimal(price), tuple(pay_with)), **kw)


def config(
    *routes: Route,
    methods: Sequence[PaymentMethod] = (TestMoneyMethod("play"),),
    **proxy: Any,
) -> Config:
    from mpp_proxy.config.model import BearerAuth

    routes = routes or (
        paid("GET", "/v1/forecast/:city", "0.05", "play"),
        paid("POST", "/v1/chat", "0.05", "play"),
        Route("GET", "/v1/free"),
    )
    service = Service(
        id="api",
        base_url="http://127.0.0.1:9",
        routes=tuple(routes),
        auth=BearerAuth(Secret(UPSTREAM_KEY)),
    )
    return Config(proxy=settings(**proxy), methods=tuple(methods), services=(service,))


class Harness:
    """One gate over one store, with request builders for the config's single service."""

    def __init__(self, gate: PaymentGate, store: Store) -> None:
        self.gate = gate
        self.store = store
        self.service = gate.config.services[0]

    def route(self, key: str) -> Route:
        return next(r for r in self.service.routes if r.key == key)

    def request(
        self,
        route_key: str,
        path: str,
        *,
        query: str = "",
        headers: Sequence[tuple[str, str]] = (),
    ) -> PaidRequest:
        route = self.route(route_key)
        return PaidRequest.of(
            self.gate.offers_for(self.service, route),
            route.method,
            path,
            query,
            [(k.lower().encode(), v.encode("latin-1")) for k, v in headers],
        )

    async def authorize(self, req: PaidRequest) -> Authorization | Problem:
        return await self.gate.authorize(req)

    async def challenge(self, req: PaidRequest) -> Problem:
        d = await self.gate.authorize(req)
        assert isinstance(d, Problem), d
        assert d.status == 402, d.body
        return d


@asynccontextmanager
async def harness(
    cfg: Config | None = None, store: Store | None = None, owner: str | None = None
) -> AsyncIterator[Harness]:
    """A started gate; `owner` plays a separate process (its own leases)."""
    store = store or open_store("memory://")
    await store.open()
    gate = PaymentGate(cfg or config(), store, owner=owner)
    await gate.start()
    try:
        yield Harness(gate, store)
    finally:
        await gate.close()
        await store.close()


def with_harness(body: Callable[[Harness], Awaitable[T]], cfg: Config | None = None) -> T:
    async def main() -> T:
        async with harness(cfg) as h:
            return await body(h)

    return asyncio.run(main())


_FAILURES: dict[str, ProxyFailure] = {
    f.reason: f
    for f in (
        UpstreamTimeout("read"),
        UpstreamUnreachable("connection refused"),
        Unforwardable(),
        ClientGone(),
    )
}


def undelivered(reason: str, upstream_status: int | None = None, body: bytes = b"") -> NotDelivered:
    """What the forwarding side reports for a paid request that failed this way."""
    if reason == "upstream-status":
        assert upstream_status is not None
        return upstream_answered(upstream_status, body)
    return _FAILURES[reason].not_delivered(upstream_status)


def www_authenticate(d: Problem) -> list[str]:
    return [v.decode("latin-1") for k, v in d.headers if k == b"www-authenticate"]


def header(d: Problem | Authorization, name: str) -> str | None:
    headers = d.receipt_headers if isinstance(d, Authorization) else d.headers
    for k, v in headers:
        if k == name.encode():
            return v.decode("latin-1")
    return None
