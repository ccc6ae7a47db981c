"""Prometheus metrics: cheap per-request accumulation in plain Python, flushed into
prometheus-client values now and then, exposed for the whole server.

A request adds to a few dict entries and a histogram bucket (well under a microsecond);
prometheus-client's own `inc`/`observe` cost several microseconds each in multiprocess mode
(an mmap write under a lock per value), so they run once per flush, not per request. Under
`mpp-proxy serve` every granian worker writes its values into the shared multiprocess
directory (PROMETHEUS_MULTIPROC_DIR), and whichever worker answers a scrape sums them all:
counters from workers replaced by a SIGHUP reload stay in the sum, so nothing resets.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from mpp_proxy.config.model import Config, MetricsSettings
from mpp_proxy.observe.outcome import BUCKETS, BUCKETS_US, OUTCOMES, Outcome, Paid, RouteStats

PREFIX = "mpp_proxy_"
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# The label value of requests no route matched (never the client's path).
UNMATCHED = "(none)"
# Failure kinds that are the upstream's (the others are the client's or ours).
UPSTREAM_ERRORS = frozenset({"refused", "tls", "timeout", "reset", "protocol"})

PoolReading = tuple[str, int, int, int]  # (service, idle, in use, waiting)


class Metrics:
    """This process's metrics. `count` is the hot path; `flush` and `exposition` are not."""

    def __init__(self, config: Config, *, version: str, pympp: str) -> None:
        self.settings = config.observe.metrics
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        # Embedded (one process): a registry of our own, so several apps in one process
        # (tests, mounts) do not collide in prometheus-client's global one.
        self._registry: CollectorRegistry | None = (
            None if self.multiprocess else CollectorRegistry()
        )
        self._decimals = {m.name: Decimal(10) ** m.decimals for m in config.methods}
        # The routes whose requests were counted since the last flush (by id: one each).
        self._active: dict[int, RouteStats] = {}
        self._errors: dict[tuple[str, str], int] = {}
        self._money: dict[tuple[str, ...], int] = {}  # (metric, labels...) -> count
        self._revenue: dict[tuple[str, str, str, str], int] = {}  # base units since flush
        self.in_flight = 0
        self._children: dict[tuple[Any, ...], Any] = {}
        self._families = _families(self._registry)
        self._version = (version, pympp)
        self._loaded = time.time()
        self.credits: Callable[[], Any] | None = None  # set by the app: async store count
        self.pools: Callable[[], Iterable[PoolReading]] = tuple

    # ---------------------------------------------------------------- the hot path

    def count(self, acc: RouteStats, status: int, answered: bool, d: int, u: int | None) -> None:
        """Count one request of route `acc`: plain int arithmetic and list appends, no lookup
        by name (`d`, `u`: its duration and upstream time in microseconds, u None: none)."""
        counts = acc.requests
        if not counts:
            self._active[id(acc)] = acc
        k = status if answered else -status
        counts[k] = counts.get(k, 0) + 1
        acc.durations.append(d)
        if u is not None:
            acc.upstreams.append(u)

    def record(self, o: Outcome) -> None:
        """Count one request from its outcome, its failure and payment included."""
        acc = o.stats
        self.count(acc, o.status, o.upstream_answered, o.duration_us, o.upstream_us)
        if o.extra is not None:
            self._record_rare(_labels(acc), o)

    def _record_rare(self, key: tuple[str, str], o: Outcome) -> None:
        if o.error in UPSTREAM_ERRORS:
            e = (key[0], o.error)
            self._errors[e] = self._errors.get(e, 0) + 1
        self._record_money(key, o)

    def _record_money(self, key: tuple[str, str], o: Outcome) -> None:
        money = self._money
        for method in o.challenges:
            k: tuple[str, ...] = ("challenges", *key, method)
            money[k] = money.get(k, 0) + 1
        if o.settlement_error:
            k = ("settlement_errors", o.settlement_error)
            money[k] = money.get(k, 0) + 1
        if o.payment is not None:
            self.record_payment(key, o.payment)
        if o.refused is not None:
            outcome, method, currency = o.refused
            k = ("payments", *key, method, currency, outcome)
            money[k] = money.get(k, 0) + 1

    def record_payment(self, key: tuple[str, str], p: Paid) -> None:
        """How one payment ended (also for the ledger's own sweeps: forfeited credits)."""
        money = self._money
        k: tuple[str, ...] = ("payments", *key, p.method, p.currency, p.outcome)
        money[k] = money.get(k, 0) + 1
        kind = OUTCOMES[p.outcome]
        if kind.revenue:
            r = (*key, p.method, p.currency)
            self._revenue[r] = self._revenue.get(r, 0) + int(p.amount)
        if kind.undelivered:
            k = ("paid_not_delivered", *key, p.method, p.currency)
            money[k] = money.get(k, 0) + 1

    # ---------------------------------------------------------------- flush

    def start(self) -> None:
        """Values that describe the process, written once it serves."""
        self._child("build_info", *self._version).set(1)
        self._child("config_loaded_timestamp_seconds").set(self._loaded)

    def flush(self) -> None:
        """Move what requests added since the last flush into prometheus-client's values."""
        active, self._active = self._active, {}
        for acc in active.values():
            service, route = _labels(acc)
            for k, n in acc.requests.items():
                source = "upstream" if k > 0 else "proxy"
                self._child("requests_total", service, route, str(abs(k)), source).inc(n)
            acc.requests = {}
            if acc.durations:
                child = self._child("request_duration_seconds", service, route)
                _add_observations(child, acc.durations)
                acc.durations = []
            if acc.upstreams:
                child = self._child("upstream_response_seconds", service, route)
                _add_observations(child, acc.upstreams)
                acc.upstreams = []
        errors, self._errors = self._errors, {}
        for (service, kind), n in errors.items():
            self._child("upstream_errors_total", service, kind).inc(n)
        money, self._money = self._money, {}
        for key, n in money.items():
            self._child(key[0] + "_total", *key[1:]).inc(n)
        revenue, self._revenue = self._revenue, {}
        for labels, amount in revenue.items():
            divisor = self._decimals.get(labels[2], Decimal(1))
            self._child("revenue_total", *labels).inc(float(Decimal(amount) / divisor))
        self._child("in_flight_requests").set(self.in_flight)
        for service, idle, in_use, waiting in self.pools():
            self._child("upstream_connections", service, "idle").set(idle)
            self._child("upstream_connections", service, "in_use").set(in_use)
            self._child("upstream_waiting_requests", service).set(waiting)

    def _child(self, name: str, *labels: str) -> Any:
        key = (name, *labels)
        child = self._children.get(key)
        if child is None:
            family = self._families[name]
            child = self._children[key] = family.labels(*labels) if labels else family
        return child

    def stop(self) -> None:
        """Final flush; a worker's live gauges leave the sum when it exits."""
        self.flush()
        if self.multiprocess:
            mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    # ---------------------------------------------------------------- exposition

    async def exposition(self) -> bytes:
        """The text format for the whole server (every worker's files, when there are some)."""
        self.flush()
        credits = None
        if self.credits is not None:
            try:
                credits = float(await self.credits())
            except Exception:
                credits = None
        registry = CollectorRegistry(auto_describe=False)
        if self.multiprocess:
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        else:
            assert self._registry is not None
            registry.register(_Mirror(self._registry))
        registry.register(_Store(credits))
        return generate_latest(registry)


class MetricsAccess:
    """Who may read /metrics: an allowed client address, or the bearer token."""

    __slots__ = ("_networks", "_token")

    def __init__(self, settings: MetricsSettings) -> None:
        self._networks = tuple(ipaddress.ip_network(c, strict=False) for c in settings.allow)
        token = settings.bearer_token
        self._token = b"bearer " + token.value.encode() if token is not None else None

    def allows(self, client: str | None, headers: Iterable[tuple[bytes, bytes]]) -> bool:
        if client and self._networks:
            try:
                address = ipaddress.ip_address(client)
            except ValueError:
                address = None
            if address is not None and any(address in net for net in self._networks):
                return True
        if self._token is not None:
            for name, value in headers:
                if name.lower() == b"authorization":
                    presented = value.strip()
                    scheme, _, rest = presented.partition(b" ")
                    candidate = scheme.lower() + b" " + rest.strip()
                    return hmac.compare_digest(candidate, self._token)
        return False


def record_reload(success: bool) -> None:
    """Count a SIGHUP reload in the server's own process (multiprocess mode only)."""
    if not os.environ.get(MULTIPROC_ENV):
        return
    families = _families(None, only=("config_reloads_total",))
    families["config_reloads_total"].labels("success" if success else "failure").inc()


# ------------------------------------------------------------------------- definitions

_LABELS = ("service", "route")
_MONEY = ("service", "route", "method", "currency")
# name -> (kind, help, labels, multiprocess gauge mode)
DEFINITIONS: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "requests_total": (
        "counter",
        "Requests answered, by who answered (proxy: our own answer; upstream: the upstream's)",
        (*_LABELS, "status", "source"),
        "",
    ),
    "request_duration_seconds": (
        "histogram",
        "Time from the request's arrival to its last byte sent",
        _LABELS,
        "",
    ),
    "upstream_response_seconds": (
        "histogram",
        "Time from forwarding to the upstream's response head",
        _LABELS,
        "",
    ),
    "upstream_errors_total": (
        "counter",
        "Upstream exchanges that failed, by kind (refused, tls, timeout, reset, protocol)",
        ("service", "kind"),
        "",
    ),
    "challenges_total": (
        "counter",
        "Payment challenges issued (one per method offered in a 402)",
        (*_LABELS, "method"),
        "",
    ),
    "payments_total": (
        "counter",
        "Credentials presented, by outcome: " + ", ".join(OUTCOMES),
        (*_MONEY, "outcome"),
        "",
    ),
    "revenue_total": (
        "counter",
        "Money earned (delivered payments), in the currency's display unit",
        _MONEY,
        "",
    ),
    "paid_not_delivered_total": (
        "counter",
        "Paid requests whose response was not delivered (the payment was kept as a credit)",
        _MONEY,
        "",
    ),
    "settlement_errors_total": (
        "counter",
        "Payment backend failures while verifying or settling",
        ("method",),
        "",
    ),
    "in_flight_requests": ("gauge", "Requests being served", (), "livesum"),
    "upstream_connections": (
        "gauge",
        "Upstream pool connections by state (idle, in_use)",
        ("service", "state"),
        "livesum",
    ),
    "upstream_waiting_requests": (
        "gauge",
        "Requests waiting for a free upstream connection",
        ("service",),
        "livesum",
    ),
    "build_info": ("gauge", "mpp-proxy and pympp versions", ("version", "pympp"), "max"),
    "config_loaded_timestamp_seconds": (
        "gauge",
        "When the configuration being served was loaded (unix seconds)",
        (),
        "max",
    ),
    "config_reloads_total": (
        "counter",
        "SIGHUP reloads, by result (success, failure)",
        ("result",),
        "",
    ),
}
STORE_METRICS = {
    "credits_outstanding": "Undelivered payments kept as credits that may still be redeemed",
}


def _labels(acc: RouteStats) -> tuple[str, str]:
    return (acc.service or UNMATCHED, acc.route or UNMATCHED)


def _families(
    registry: CollectorRegistry | None, only: Iterable[str] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in only or DEFINITIONS:
        kind, doc, labels, mode = DEFINITIONS[name]
        full = PREFIX + name.removesuffix("_total")
        if kind == "counter":
            out[name] = Counter(full, doc, labels, registry=registry)
        elif kind == "histogram":
            out[name] = Histogram(full, doc, labels, registry=registry, buckets=BUCKETS)
        else:
            out[name] = Gauge(
                full,
                doc,
                labels,
                registry=registry,
                multiprocess_mode=mode,  # type: ignore[arg-type]
            )
    return out


def _add_observations(child: Any, values_us: list[int]) -> None:
    """Add observations (microseconds) to a histogram child at once. prometheus-client (pinned)
    keeps one value per bucket (not cumulative: a value goes to the first bound it does not
    exceed, +Inf last) and one for the sum; observe() adds one at a time."""
    values_us.sort()
    counted = 0
    buckets = child._buckets
    for i, bound in enumerate(BUCKETS_US):
        upto = bisect_right(values_us, bound, counted)
        if upto > counted:
            buckets[i].inc(upto - counted)
            counted = upto
    if counted < len(values_us):
        buckets[len(BUCKETS_US)].inc(len(values_us) - counted)
    child._sum.inc(sum(values_us) / 1_000_000)


class _Mirror:
    """The embedded registry's metrics, collected into the scrape registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self._registry.collect()


class _Store:
    """Values read from the state store at scrape time: the same for every worker."""

    def __init__(self, credits: float | None) -> None:
        self._credits = credits

    def collect(self) -> Iterator[Metric]:
        if self._credits is not None:
            family = GaugeMetricFamily(
                PREFIX + "credits_outstanding", STORE_METRICS["credits_outstanding"]
            )
            family.add_metric([], self._credits)
            yield family
