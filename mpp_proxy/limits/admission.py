"""The admit stage's decision for one route: shedding, rate limits and spend caps, the
in-flight slot, in that order; an Admission (what the request holds until it ends) or the
refusal.

A route's limits are its own and its service's (counted across the service). Counters live in
the proxy's store: in this process for memory://, shared through SQLite or Redis otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from mpp_proxy.config.checks import base_units
from mpp_proxy.config.model import Capacity, Route, Service
from mpp_proxy.limits import refusals
from mpp_proxy.limits.capacity import InFlight
from mpp_proxy.limits.local import LocalRate
from mpp_proxy.limits.rates import RatePolicy, policy_names
from mpp_proxy.limits.shedding import Shedder, Verdict
from mpp_proxy.limits.spend import SpendPolicy
from mpp_proxy.problems import Headers, Problem
from mpp_proxy.state.base import Payment, Store, Taken
from mpp_proxy.state.memory import MemoryStore

log = logging.getLogger("mpp_proxy.limits")

# A shared store that takes longer than this to decide counts as failed (on_store_error).
STORE_TIMEOUT = 2.0
# How long a client refused for capacity (queue full, no connection) should wait.
CAPACITY_RETRY = 1

HeaderList = list[tuple[bytes, bytes]]
# What counting gives an admitted request: its RateLimit fields, its spend keys' values.
Counted = tuple[Headers, list[str]]
_NO_VALUES: list[str] = []


class ServiceCapacity:
    """A service's in-flight cap and shedder, shared by its routes (per worker process)."""

    __slots__ = ("gate", "service", "shedder")

    def __init__(self, service: str, capacity: Capacity) -> None:
        self.service = service
        self.gate = (
            InFlight(capacity.max_in_flight, capacity.queue, capacity.queue_timeout)
            if capacity.max_in_flight is not None
            else None
        )
        self.shedder = Shedder(capacity.shed_above) if capacity.shed_above is not None else None


class Admission:
    """What an admitted request holds until it ends: its slot (and probe), the RateLimit
    fields its response carries, the spend counters a delivered payment adds to."""

    __slots__ = ("_capacity", "_limits", "_observed", "_probe", "_slot", "_values", "headers")

    def __init__(
        self,
        limits: RouteLimits,
        capacity: ServiceCapacity | None,
        slot: bool,
        probe: bool,
        headers: Headers,
        values: list[str],
    ) -> None:
        self._limits = limits
        self._capacity = capacity
        self._slot = slot
        self._probe = probe
        self._observed = False
        self._values = values
        self.headers = headers

    @property
    def times_upstream(self) -> bool:
        """Whether the upstream's response time is wanted (the service sheds load)."""
        return self._capacity is not None and self._capacity.shedder is not None

    def observe(self, seconds: float) -> None:
        """The upstream answered (or failed) after `seconds`."""
        capacity = self._capacity
        if capacity is not None and capacity.shedder is not None:
            self._observed = True
            capacity.shedder.record(seconds, probe=self._probe)

    async def delivered(self, payment: Payment) -> None:
        """A paid request was delivered: its payment counts toward the spend caps."""
        await self._limits.count_spend(self._values, payment)

    def release(self) -> None:
        """The request ended: its slot goes to the next one. Called exactly once."""
        capacity = self._capacity
        if capacity is None:
            return
        if self._slot:
            self._slot = False
            assert capacity.gate is not None
            capacity.gate.leave()
        if self._probe and not self._observed and capacity.shedder is not None:
            capacity.shedder.abandon()


class RouteLimits:
    """Compiled once per route (RoutePlan.limits)."""

    __slots__ = (
        "capacity",
        "closed",
        "counts",
        "holds",
        "local",
        "memory",
        "paid",
        "policy_fields",
        "quick",
        "rates",
        "route_key",
        "service",
        "show_fields",
        "single",
        "specs",
        "spend",
        "store",
        "sync",
        "wants_payer",
    )

    def __init__(
        self,
        service: Service,
        route: Route,
        store: Store,
        capacity: ServiceCapacity | None,
        currencies: frozenset[str] = frozenset(),
    ) -> None:
        """`currencies`: those of the methods the route is priced in."""
        self.service = service.id
        self.route_key = route.key
        self.store = store
        self.memory = store if isinstance(store, MemoryStore) else None
        self.local = self.memory is not None
        self.capacity = capacity
        self.paid = route.price is not None
        levels = [(r, "route") for r in route.limits.rates]
        levels += [(r, "service") for r in service.limits.rates]
        names = policy_names(levels)
        route_scope, service_scope = f"r:{service.id}:{route.key}", f"s:{service.id}"
        self.rates = tuple(
            RatePolicy(limit, name, route_scope if level == "route" else service_scope)
            for (limit, level), name in zip(levels, names, strict=True)
        )
        self.specs = tuple(p.spec for p in self.rates)
        self.spend = _spend_policies(service, route, currencies, (route_scope, service_scope))
        kinds = [p.key.kind for p in self.rates] + [p.key.kind for p in self.spend]
        self.wants_payer = self.paid and "payer" in kinds
        mode = route.limits.on_store_error or service.limits.on_store_error
        self.closed = (mode or ("closed" if self.paid else "open")) == "closed"
        headers = route.limits.headers
        self.show_fields = (service.limits.headers if headers is None else headers) is not False
        self.policy_fields: Headers = (
            ((b"ratelimit-policy", b", ".join(p.policy_field() for p in self.rates)),)
            if self.rates
            else ()
        )
        self.counts = bool(self.rates or self.spend)
        # The usual case, decided inline: one rate limit, no spend cap, counted in process.
        self.single = self.rates[0] if len(self.rates) == 1 and not self.spend else None
        # Nothing to wait for (no shared store, no in-flight queue): see admit_now.
        self.sync = capacity is None and (self.memory is not None or not self.counts)
        # Whether an admitted request holds something until it ends (a slot, spend counters).
        self.holds = capacity is not None or bool(self.spend)
        # Decided inline, with nothing to hold and no connection to take: a free route's one
        # in-process limit (the chain calls core.admit.admit_now for these, no coroutine).
        self.quick = (
            LocalRate(self.single, self.memory, route.key, self.show_fields)
            if self.single is not None
            and self.memory is not None
            and not self.holds
            and not self.paid
            else None
        )

    def refused(self, used: int) -> Problem:
        """The 429 of a one-limit route whose request did not fit (`used` with it counted)."""
        return self._refusal(Taken(False, (used,), ()))

    def count_now(self, client: str, payer: str | None, headers: HeaderList) -> Counted | Problem:
        """The decision without a coroutine, for a route that never waits (`sync`): its
        RateLimit fields and spend keys' values, or the refusal. With `holds` false the request
        needs no Admission: nothing to release, nothing to count on delivery."""
        memory, single = self.memory, self.single
        if single is None or memory is None:
            if not self.counts:
                return (), _NO_VALUES
            assert memory is not None
            buckets, counters, values = self._keys(client, payer, headers)
            allowances = [p.allowance for p in self.spend]
            taken = memory.take_now(buckets, self.specs, counters, allowances)
            return self._counted(taken, values)
        # The usual case, inline: one bucket, its name in one concatenation for an IPv4 ip key.
        if single.by_ip and ":" not in client:
            bucket = single.ip_prefix + client
        else:
            bucket = single.prefix + single.key.value(client, payer, self.route_key, headers)
        taken = memory.take_now([bucket], self.specs)
        if not taken.ok:
            return self._refusal(taken)
        if not self.show_fields:
            return (), _NO_VALUES
        return (self.policy_fields[0], (b"ratelimit", single.field(taken.used[0]))), _NO_VALUES

    async def admit(
        self, client: str, payer: str | None, headers: HeaderList
    ) -> Admission | Problem:
        """Decide one request: an Admission to go on with, or the 429/503 to answer."""
        capacity = self.capacity
        probe = False
        if capacity is not None and capacity.shedder is not None:
            verdict = capacity.shedder.admit()
            if verdict is Verdict.SHED:
                return refusals.shedding(self.service, capacity.shedder.retry_after())
            probe = verdict is Verdict.PROBE
        fields: Headers = ()
        values: list[str] = _NO_VALUES
        if self.counts:
            if self.memory is not None:
                decided = self.count_now(client, payer, headers)
            else:
                decided = await self._count_shared(client, payer, headers)
            if isinstance(decided, Problem):
                if probe:
                    capacity.shedder.abandon()  # type: ignore[union-attr]
                return decided
            fields, values = decided
        slot = False
        if capacity is not None and capacity.gate is not None:
            gate = capacity.gate
            slot = gate.try_enter() or await gate.enter()
            if not slot:
                if probe:
                    capacity.shedder.abandon()  # type: ignore[union-attr]
                why = "at its limit of requests in flight"
                return refusals.over_capacity(self.service, CAPACITY_RETRY, why)
        return Admission(self, capacity, slot, probe, fields, values)

    def _keys(
        self, client: str, payer: str | None, headers: HeaderList
    ) -> tuple[list[str], list[str], list[str]]:
        """(bucket names, spend counter names, the spend keys' values) for this request."""
        route = self.route_key
        buckets = [p.prefix + p.key.value(client, payer, route, headers) for p in self.rates]
        values = [p.key.value(client, payer, route, headers) for p in self.spend]
        counters: list[str] = []
        if values:
            now = time.time()
            counters = [p.counter(v, now)[0] for p, v in zip(self.spend, values, strict=True)]
        return buckets, counters, values

    async def _count_shared(
        self, client: str, payer: str | None, headers: HeaderList
    ) -> Counted | Problem:
        """Rate buckets and spend counters in one round trip to the shared store."""
        buckets, counters, values = self._keys(client, payer, headers)
        allowances = [p.allowance for p in self.spend]
        taken = await self._take_shared(buckets, counters, allowances)
        if taken is None:
            return refusals.limits_unavailable() if self.closed else ((), values)
        return self._counted(taken, values)

    def _counted(self, taken: Taken, values: list[str]) -> Counted | Problem:
        """The fields to send and the spend keys' values (to count a delivery), or the 429."""
        if not taken.ok:
            return self._refusal(taken)
        return (self._fields(taken) if self.show_fields else ()), values

    async def _take_shared(
        self, buckets: list[str], counters: list[str], allowances: list[int]
    ) -> Taken | None:
        try:
            async with asyncio.timeout(STORE_TIMEOUT):
                return await self.store.take(buckets, self.specs, counters, allowances)
        except Exception as exc:
            mode = "refused" if self.closed else "let through"
            log.warning("limit store failed (%s): request %s", type(exc).__name__, mode)
            return None

    def _fields(self, taken: Taken) -> Headers:
        if not self.rates:
            return ()
        value = b", ".join(p.field(u) for p, u in zip(self.rates, taken.used, strict=True))
        return (*self.policy_fields, (b"ratelimit", value))

    def _refusal(self, taken: Taken) -> Problem:
        over = [
            (p.retry_after(u), p)
            for p, u in zip(self.rates, taken.used, strict=True)
            if u > p.capacity
        ]
        if over:
            wait, policy = max(over, key=lambda pair: pair[0])
            value = b", ".join(
                p.refused_field(u) for p, u in zip(self.rates, taken.used, strict=True)
            )
            fields = (*self.policy_fields, (b"ratelimit", value))
            limit = policy.limit
            return refusals.rate_limited(wait, policy.name, limit.rate, limit.key, fields)
        now = time.time()
        for cap, spent in zip(self.spend, taken.spent, strict=True):
            if spent > cap.allowance:
                _, end = cap.counter("", now)
                per, key = cap.cap.per, cap.cap.key
                return refusals.spend_cap_reached(cap.shown, per, key, end, now)
        raise AssertionError("a refused decision names no limit")

    async def count_spend(self, values: Sequence[str], payment: Payment) -> None:
        """Add a delivered payment to the counters of the caps in its currency."""
        if not self.spend or not values:
            return
        now = time.time()
        for index, (policy, value) in enumerate(zip(self.spend, values, strict=True)):
            if policy.currency != payment.currency:
                continue
            counter, end = policy.counter(value, now)
            try:
                await self.store.add_spent(
                    counter, int(payment.amount), end, f"{payment.key}:{index}"
                )
            except Exception as exc:
                log.warning("spend counter not updated (%s)", type(exc).__name__)


def _spend_policies(
    service: Service, route: Route, currencies: frozenset[str], scopes: tuple[str, str]
) -> tuple[SpendPolicy, ...]:
    """The caps that can count this route's payments (those in a currency it is priced in),
    with the route's price in each: for a price read from the request (decided in the pay
    stage, after this one), the highest it can be, so that no call takes a payer over a cap."""
    price = route.price
    if price is None:
        return ()
    amount = max(price.rule.amounts) if price.rule is not None else price.amount
    out: list[SpendPolicy] = []
    caps = [(c, scopes[0]) for c in route.limits.spend]
    caps += [(c, scopes[1]) for c in service.limits.spend]
    for index, (cap, scope) in enumerate(caps):
        assert cap.decimals is not None and cap.currency is not None
        if cap.currency in currencies:
            out.append(SpendPolicy(cap, base_units(amount, cap.decimals), scope, index))
    return tuple(out)
