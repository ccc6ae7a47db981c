"""The account stage's sinks: metrics, the access log, events, tracing and the webhook outbox.

The core fills one `Outcome` per finished request and hands it to `Observer.record` once; a
plain answer (no failure, no payment, nobody subscribed) skips the Outcome and goes straight
to `Observer.count` and `Observer.line` with its fields. When nothing watches (metrics off,
no access log, no subscriber, no tracing, no webhooks) `Observer.on` is False and the core
builds no outcome at all.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mpp_proxy.config.model import Config
from mpp_proxy.observe.events import ConfigReloaded, Event, Events
from mpp_proxy.observe.metrics import Metrics, MetricsAccess
from mpp_proxy.observe.outcome import (
    OUTCOMES,
    REFUSALS,
    VOIDED_REASON,
    Outcome,
    OutcomeKind,
    Paid,
    PlainFields,
    RouteStats,
    apart,
    stop_task,
)
from mpp_proxy.state.base import Payment, PaymentStatus, Store

if TYPE_CHECKING:
    from mpp_proxy.observe.tracing import Tracing

__all__ = [
    "OUTCOMES",
    "REFUSALS",
    "VOIDED_REASON",
    "Event",
    "Events",
    "Observer",
    "Outcome",
    "OutcomeKind",
    "Paid",
    "RouteStats",
    "apart",
]

log = logging.getLogger("mpp_proxy.observe")

# How often buffered log lines and metric counts are written out. The benchmarks that run the
# server under valgrind (~50 times slower) stretch it by as much, so that one flush covers as
# many requests as it does at full speed.
FLUSH_ENV = "MPP_PROXY_FLUSH_SECONDS"


def flush_seconds(text: str | None) -> float:
    """The flush period from the environment's text (0.5 s when unset)."""
    if text is None or not text.strip():
        return 0.5
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < 86_400:  # also refuses nan and inf
        raise ValueError(
            f"{FLUSH_ENV} must be a number of seconds above 0 and below 86400, got {text!r}"
        )
    return seconds


FLUSH_SECONDS = flush_seconds(os.environ.get(FLUSH_ENV))
# `mpp-proxy serve` sets this to "1" or "0": the access log's default under the CLI.
ACCESS_LOG_ENV = "MPP_PROXY_ACCESS_LOG"


class Observer:
    """Every sink of one app, built from its config (no I/O until `start`)."""

    def __init__(self, config: Config, store: Store, *, version: str, pympp: str) -> None:
        settings = config.observe
        self.config = config
        self.metrics = (
            Metrics(config, version=version, pympp=pympp) if settings.metrics.enabled else None
        )
        self.access = MetricsAccess(settings.metrics)
        access = settings.log.access
        if access is None:
            access = os.environ.get(ACCESS_LOG_ENV) == "1"
        self.log: Any = None
        if access:
            from mpp_proxy.observe.access_log import AccessLog

            self.log = AccessLog(config)
        self.events = Events({m.name: m.decimals for m in config.methods}, self._refresh)
        self.tracing: Tracing | None = None
        if settings.tracing.otlp_endpoint:
            from mpp_proxy.observe.tracing import Tracing

            self.tracing = Tracing(settings.tracing, version=version)
        self.webhooks: Any = None
        if settings.webhooks:
            from mpp_proxy.observe.webhooks import Webhooks

            self.webhooks = Webhooks(config, store)
        self._store = store
        self.unmatched = RouteStats("", "")  # the requests no route matched
        self.arrivals = 0  # requests begun; in flight: those not yet recorded
        self.recorded = 0
        self.count: Callable[[RouteStats, int, bool, int, int | None], None] | None = None
        self.line: Callable[[PlainFields, int], None] | None = None
        self.plain = True
        self._task: asyncio.Task[None] | None = None
        self._later: set[asyncio.Future[None]] = set()
        self.on = False
        self._refresh()

    def _refresh(self) -> None:
        self.on = bool(
            self.metrics or self.log or self.events.handlers or self.tracing or self.webhooks
        )
        self._plain_sinks()

    # ---------------------------------------------------------------- per request

    def arrived(self) -> int:
        """A request came in (counted in flight until its outcome is recorded); its start."""
        self.arrivals += 1
        return time.perf_counter_ns()

    def _plain_sinks(self) -> None:
        """What a plain answer goes to when no subscriber needs its Outcome (`plain`): the
        metrics count and the log line, each called with the request's fields (None: that
        sink is off). With a subscriber, every request becomes an Outcome for `record`."""
        self.plain = not self.events.handlers
        self.count = self.metrics.count if self.metrics is not None else None
        self.line = self.log.line if self.log is not None else None

    def record(self, o: Outcome) -> None:
        """A finished request's outcome, for every sink at once. Metrics and the log keep it
        as plain counts and a line in a buffer, written out at the next flush."""
        self.recorded += 1
        if self.metrics is not None:
            self.metrics.record(o)
        if self.log is not None:
            self.log.record(o)
        if self.events.handlers:
            self.events.record(o)

    async def exposition(self) -> bytes:
        """/metrics: the whole server's values, this worker's counts since the flush included."""
        assert self.metrics is not None
        self.metrics.in_flight = self.arrivals - self.recorded
        return await self.metrics.exposition()

    async def paid(self, o: Outcome) -> None:
        """A paid outcome's durable part: its webhook deliveries, queued in the store."""
        if self.webhooks is not None and o.payment is not None:
            await self.webhooks.enqueue(o)

    async def forfeited(self, row: Payment) -> None:
        """A credit the ledger forfeited (its time ran out): counted, and its webhook queued."""
        await self._ended_apart(Paid.of(row, "forfeited", "credit-expired"), row)

    async def voided(self, row: Payment) -> None:
        """A credit an operator voided through the admin API: counted, its webhook queued."""
        await self._ended_apart(Paid.of(row, "voided", VOIDED_REASON), row)

    async def _ended_apart(self, p: Paid, row: Payment) -> None:
        """A payment that ended outside any request (the ledger's sweep, an operator)."""
        if self.metrics is not None:
            self.metrics.record_payment((row.service, row.route), p)
        if self.webhooks is not None:
            await self.webhooks.enqueue_payment(p, apart(row))

    def paid_later(self, o: Outcome) -> None:
        """`paid` for a request whose task is ending abnormally: queued from a task of its own."""
        if self.webhooks is not None and o.payment is not None:
            task = asyncio.ensure_future(self.webhooks.enqueue(o))
            self._later.add(task)
            task.add_done_callback(self._later.discard)

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self.metrics is not None:
            self.metrics.credits = self._credits
            self.metrics.start()
        if self.webhooks is not None:
            self.webhooks.start()
        if self.metrics is not None or self.log is not None:
            self._task = asyncio.get_running_loop().create_task(
                self._flush_now_and_then(), name="mpp-proxy metrics and log flush"
            )
        self.events.emit(
            ConfigReloaded(
                "", metadata={"source": self.config.source, "services": len(self.config.services)}
            )
        )

    async def _credits(self) -> int:
        return await self._store.count_payments(PaymentStatus.CREDITED)

    async def _flush_now_and_then(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_SECONDS)
            self.flush()

    def flush(self) -> None:
        try:
            if self.metrics is not None:
                self.metrics.in_flight = self.arrivals - self.recorded
                self.metrics.flush()
            if self.log is not None:
                self.log.flush()
        except Exception as exc:
            log.warning("metrics or log flush failed: %s", type(exc).__name__)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)
        if self._later:
            await asyncio.gather(*self._later, return_exceptions=True)
        if self.webhooks is not None:
            await self.webhooks.stop()
        if self.metrics is not None:
            self.metrics.in_flight = self.arrivals - self.recorded
            self.metrics.stop()
        if self.log is not None:
            self.log.flush()
        if self.tracing is not None:
            self.tracing.shutdown()
