"""What a finished request was, as plain data the core fills once: the one record every sink
(metrics, access log, events, tracing, webhooks) reads, and the payment-outcome vocabulary."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from mpp_proxy.state.base import Payment


@dataclass(frozen=True, slots=True)
class OutcomeKind:
    """One payment outcome and what it means for the money. A new outcome is one more entry
    in OUTCOMES: metrics, the access log and webhooks read these flags, never the name."""

    name: str
    revenue: bool = False  # the payment is earned now: counted in revenue_total
    undelivered: bool = False  # paid but not delivered: counted in paid_not_delivered_total
    webhooks: tuple[str, ...] = ()  # the webhook events it raises


OUTCOMES: dict[str, OutcomeKind] = {
    k.name: k
    for k in (
        OutcomeKind("delivered", revenue=True, webhooks=("payment.delivered",)),
        # A credit spent by a retry that was delivered: the ledger row ends delivered.
        OutcomeKind("redeemed", revenue=True, webhooks=("payment.delivered",)),
        # Settled, not delivered: kept as a credit the same credential redeems.
        OutcomeKind("credited", undelivered=True, webhooks=("payment.credited", "delivery.failed")),
        # Settled, not delivered, given back (Stripe, on_failure = "refund").
        OutcomeKind("refunded", undelivered=True, webhooks=("payment.refunded", "delivery.failed")),
        # Checked, the upstream failed before settlement: nothing was charged.
        OutcomeKind("released", webhooks=("delivery.failed",)),
        # The upstream answered with success, then settling was refused: nothing was charged
        # and the answer was discarded (402 with fresh challenges).
        OutcomeKind("settle_failed", webhooks=("payment.settle_failed", "delivery.failed")),
        OutcomeKind("forfeited", webhooks=("payment.forfeited",)),
        # An operator voided a credit (admin API).
        OutcomeKind("voided", webhooks=("payment.voided",)),
        OutcomeKind("refused_replay"),
        OutcomeKind("refused_invalid"),
        OutcomeKind("refused_expired"),
    )
}

# Payment problems (their type slugs, PROTOCOL.md) and the refusal outcome each one records.
REFUSALS: dict[str, str] = {
    "credential-used": "refused_replay",
    "credential-refunded": "refused_replay",
    "payment-in-progress": "refused_replay",
    "payment-expired": "refused_expired",
    "credit-forfeited": "refused_expired",
    "credit-voided": "refused_invalid",
    "malformed-credential": "refused_invalid",
    "invalid-challenge": "refused_invalid",
    "verification-failed": "refused_invalid",
    "payment-insufficient": "refused_invalid",
    "method-unsupported": "refused_invalid",
}


class Paid(NamedTuple):
    """The payment side of a request that presented a credential the gate accepted."""

    outcome: str  # a name in OUTCOMES
    method: str  # the operator's method name
    amount: str  # base units, decimal string
    currency: str
    reference: str
    payer: str
    key: str  # the ledger row (webhook event ids derive from it)
    attempts: int
    reason: str = ""  # why it was not delivered ("upstream-timeout", ...)

    @classmethod
    def of(cls, row: Payment, outcome: str, reason: str = "") -> Paid:
        """How the payment in ledger row `row` ended."""
        return cls(
            outcome,
            row.method,
            row.amount,
            row.currency,
            row.reference,
            row.payer,
            row.key,
            row.attempts,
            reason,
        )


# A voided credit's reason in metrics and webhooks (who and why are on its ledger row).
VOIDED_REASON = "voided-by-operator"


def apart(row: Payment) -> dict[str, Any]:
    """Where a payment that ended outside any request happened, for its webhook body."""
    return {"service": row.service, "route": row.route, "request_id": "", "status": 0}


# Histogram bounds in seconds, 1 ms .. 60 s: a cached hit to a long completion.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# The same in microseconds: requests are timed in integers (cheaper to count and to write).
BUCKETS_US = tuple(round(b * 1_000_000) for b in BUCKETS)


class RouteStats:
    """One route's labels and the counts its requests added since the last metrics flush.

    The core builds one per route plan (and one for requests no route matched) and puts it in
    every Outcome of that route: the hot path then looks nothing up by name.
    """

    __slots__ = ("durations", "json_labels", "requests", "route", "service", "upstreams")

    def __init__(self, service: str, route: str) -> None:
        self.service = service
        self.route = route
        # `"service":"..","route":".."` as JSON, for the access log's lines.
        self.json_labels = orjson.dumps({"service": service, "route": route})[1:-1].decode()
        # Requests by status: the upstream's answers as `status`, ours as `-status`.
        self.requests: dict[int, int] = {}
        # The histograms' observations since the last flush, in microseconds: appended here,
        # sorted and counted into buckets at the flush (a third of the cost of a bisect each).
        self.durations: list[int] = []
        self.upstreams: list[int] = []


class Extra(NamedTuple):
    """What a request that was more than a plain answer adds: a failure, our own problem, a
    payment. Absent (None) on the common path, so sinks test one field."""

    error: str  # the failure's kind ("timeout", "refused", ...), "" when none
    problem: str  # the problem type slug of our own answers, "" otherwise
    payment: Paid | None  # a credential was accepted: how its payment ended
    refused: tuple[str, str, str] | None  # (outcome, method, currency) of a refused credential
    challenges: tuple[str, ...]  # method names a 402 offered
    settlement_error: str  # the method whose backend failed (500), "" when none


NOTHING_MORE = Extra("", "", None, None, (), "")


class Outcome(NamedTuple):
    """One finished request. A tuple of what the exchange already holds (the rest is derived
    when a sink asks), built with `new_outcome((...))`: one C call per request."""

    stats: RouteStats  # the route's labels (service "" when none matched)
    rid: bytes  # the request id
    # Only plain values, no reference to the request's scope: an outcome can outlive its
    # request (an event subscriber's, a webhook's), and keep nothing else alive.
    client: str  # the client's address (after trusted proxies), "" when unknown
    query_string: bytes
    method: str
    path: str  # without the query
    status: int
    upstream_answered: bool  # the upstream's response was passed on (else: our own answer)
    bytes_in: int
    bytes_out: int
    duration_us: int  # microseconds, request start to the last byte sent
    upstream_us: int | None  # microseconds to the upstream's response head
    extra: Extra | None  # None for a plain answer
    ended_ns: int  # time.perf_counter_ns() when it finished (the log makes it a time of day)

    @property
    def duration(self) -> float:
        """Seconds, request start to the last byte sent."""
        return self.duration_us / 1_000_000

    @property
    def upstream(self) -> float | None:
        """Seconds to the upstream's response head (None: no upstream answer)."""
        up = self.upstream_us
        return None if up is None else up / 1_000_000

    @property
    def more(self) -> Extra:
        return self.extra or NOTHING_MORE

    @property
    def error(self) -> str:
        return self.more.error

    @property
    def problem(self) -> str:
        return self.more.problem

    @property
    def payment(self) -> Paid | None:
        return self.more.payment

    @property
    def refused(self) -> tuple[str, str, str] | None:
        return self.more.refused

    @property
    def challenges(self) -> tuple[str, ...]:
        return self.more.challenges

    @property
    def settlement_error(self) -> str:
        return self.more.settlement_error

    @property
    def service(self) -> str:
        return self.stats.service

    @property
    def route(self) -> str:
        return self.stats.route

    @property
    def request_id(self) -> str:
        return self.rid.decode("latin-1")

    @property
    def query(self) -> str:
        query = self.query_string
        return query.decode("latin-1") if query else ""

    @property
    def source(self) -> str:
        """`upstream` for the upstream's answer, `proxy` for our own."""
        return "upstream" if self.upstream_answered else "proxy"


# A plain answer's fields: an Outcome's first twelve (less `extra`, which it has none of, and
# `ended_ns`, passed beside them).
PlainFields = tuple[RouteStats, bytes, str, bytes, str, str, int, bool, int, int, int, int | None]


def new_outcome(values: tuple[object, ...]) -> Outcome:
    """An Outcome from its field values in order (tuple.__new__: no Python-level call)."""
    return _tuple_new(Outcome, values)


_tuple_new = tuple.__new__


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    """Cancel a sink's background task and wait for it to end."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
