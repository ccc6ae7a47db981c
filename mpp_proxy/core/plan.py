"""Compiled plans: everything the hot path needs for a service and for one of its routes, built
once at load so that a request does no lookups and builds no strings for them."""

from __future__ import annotations

from mpp_proxy.config.auth import auth_headers
from mpp_proxy.config.model import PaymentMethod, ProxySettings, Route, Service
from mpp_proxy.core.forwarded import ClientAddress
from mpp_proxy.core.headers import RequestHeaderRules, ResponseHeaderRules
from mpp_proxy.core.pool import UpstreamPool
from mpp_proxy.core.upstream import parse_origin
from mpp_proxy.limits import RouteLimits, ServiceCapacity, compile_limits, service_capacity
from mpp_proxy.observe.outcome import RouteStats
from mpp_proxy.payments import PaymentGate, RouteOffers
from mpp_proxy.state import Store
from mpp_proxy.state.memory import MemoryStore


class ServicePlan:
    """One service: its upstream (origin and pool), header rules, timeouts, how its clients'
    addresses are read, its in-flight cap and shedder (None without)."""

    __slots__ = (
        "base_path",
        "capacity",
        "clients",
        "forward_ip",
        "id",
        "origin",
        "pool",
        "request_rules",
        "response_rules",
        "service",
        "timeouts",
    )

    def __init__(self, service: Service, clients: ClientAddress | None = None) -> None:
        self.service = service
        self.clients = clients if clients is not None else ClientAddress(())
        self.capacity: ServiceCapacity | None = service_capacity(service)
        self.id = service.id
        self.origin = parse_origin(service.base_url)
        self.base_path = self.origin.base_path
        self.pool = UpstreamPool(
            self.origin, max_connections=service.max_connections, ca_bundle=service.ca_bundle
        )
        self.request_rules = RequestHeaderRules(
            host=self.origin.host_header,
            auth=auth_headers(service.auth),
            strip=service.strip_headers,
        )
        self.response_rules = ResponseHeaderRules(service.strip_response_headers)
        self.timeouts = service.timeouts
        self.forward_ip = service.forward_client_ip


class RoutePlan:
    """One route of a service: the stages it runs and their compiled state.

    `offers` is None for a free route (no pay stage), `limits` for a route without limits (no
    admit stage); `quick` its one in-process limit when that is all it limits by (decided
    inline, see core.admit.admit_now), else None; `staged` when a bodyless request still has
    a stage after intake that needs a coroutine (an admit that is not quick, pay);
    `observed` is what the account stage counts its requests in.
    """

    __slots__ = (
        "deliver_below",
        "key",
        "limits",
        "max_body",
        "observed",
        "offers",
        "quick",
        "route",
        "service",
        "staged",
    )

    def __init__(
        self,
        service: ServicePlan,
        route: Route,
        offers: RouteOffers | None,
        limits: RouteLimits | None = None,
    ) -> None:
        self.limits = limits
        self.quick = limits.quick if limits is not None else None
        self.staged = offers is not None or (limits is not None and self.quick is None)
        self.service = service
        self.route = route
        self.key = route.key
        self.offers = offers
        self.max_body = (
            route.max_body_bytes
            if route.max_body_bytes is not None
            else service.service.max_body_bytes
        )
        self.deliver_below = route.deliver_below
        # The route's labels and per-flush counters, carried by each of its outcomes.
        self.observed = RouteStats(service.id, route.key)


class Planner:
    """Builds the route plans the router hands back, sharing one ServicePlan per service.

    The service plans are built on first use: `Router.compile` calls the planner only after
    its own checks (duplicate service ids, ambiguous routes), so those are reported first.
    """

    __slots__ = ("_clients", "_config", "_gate", "_methods", "_services", "_store")

    def __init__(
        self,
        services: tuple[Service, ...],
        gate: PaymentGate | None,
        store: Store | None = None,
        settings: ProxySettings | None = None,
        methods: tuple[PaymentMethod, ...] = (),
    ) -> None:
        """`store` counts the limits (in this process when None); `settings` say which
        proxies are trusted; `methods` price the spend caps."""
        self._config = services
        self._gate = gate
        self._store = store if store is not None else MemoryStore()
        proxy = settings or ProxySettings()
        self._clients = ClientAddress(proxy.trusted_proxies, proxy.forwarded_header)
        self._methods = {m.name: m for m in methods}
        self._services: dict[str, ServicePlan] | None = None

    @property
    def services(self) -> dict[str, ServicePlan]:
        if self._services is None:
            self._services = {s.id: ServicePlan(s, self._clients) for s in self._config}
        return self._services

    def __call__(self, service: Service, route: Route) -> RoutePlan:
        offers = None
        if route.price is not None:
            assert self._gate is not None
            offers = self._gate.offers_for(service, route)
        sp = self.services[service.id]
        limits = compile_limits(service, route, self._store, sp.capacity, self._methods)
        return RoutePlan(sp, route, offers, limits)
