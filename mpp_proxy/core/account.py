"""The account stage: how a request ended, recorded where it matters.

A paid request ends exactly once: delivered (its payment is kept as revenue) or not delivered
(released when it had not settled yet, else kept as a credit the same credential can redeem,
or refunded); that goes to the payment ledger. Then every finished request, free or paid,
answered by us or by the upstream, becomes one `Outcome` that the observer's sinks (metrics,
access log, events, tracing, webhooks) read, once.
"""

from __future__ import annotations

from time import perf_counter_ns
from typing import TYPE_CHECKING

from mpp_proxy.core.types import Scope
from mpp_proxy.observe import REFUSALS, Observer, Outcome, Paid
from mpp_proxy.observe.outcome import Extra, PlainFields, new_outcome
from mpp_proxy.payments import Authorization, NotDelivered, RouteOffers
from mpp_proxy.payments.authorization import Response
from mpp_proxy.problems import Problem

if TYPE_CHECKING:
    from mpp_proxy.core.exchange import Exchange
    from mpp_proxy.observe.tracing import Tracing

_SETTLEMENT_ERROR = "internal-payment-error"


async def delivered(auth: Authorization | None, response: Response | None = None) -> None:
    """The upstream answered with success and the whole body reached the client (`response`
    is kept for retries with the same Idempotency-Key)."""
    if auth is not None:
        await auth.delivered(response)


async def undelivered(
    auth: Authorization | None, why: NotDelivered, problem: Problem | None = None
) -> Problem:
    """Before the head went out: the answer is `problem`, or for a paid request what became of
    its payment."""
    if auth is not None:
        return await auth.undelivered(why)
    assert problem is not None
    return problem


async def aborted(auth: Authorization | None, why: NotDelivered) -> None:
    """No answer can follow (the head went out, the client left, the server stops)."""
    if auth is not None:
        await auth.undelivered(why)


# ---------------------------------------------------------------------------- observed


def trace(tracing: Tracing, ex: Exchange) -> None:
    """A traced request's server span, begun as it arrives."""
    plan = ex.plan
    ex.trace = tracing.begin(ex.scope["headers"], ex.method, ex.path, plan.service.id, plan.key)


def finished(observer: Observer, ex: Exchange) -> Outcome | None:
    """Hand a matched request's outcome to the sinks (once, when it is over); returned when
    its payment is owed webhooks (the caller queues them). A plain answer nobody subscribed
    to goes to the metrics count and the log line as it is: no Outcome."""
    mine = ex.problem
    extra = None
    if mine is not None or ex.auth is not None or ex.error:
        extra = _extra(ex, mine)
    reader = ex.reader
    scope = ex.scope
    client = ex.client
    ended = perf_counter_ns()
    stats = ex.plan.observed
    answered = mine is None and ex.head_sent
    duration = (ended - ex.started) // 1000
    fields: PlainFields = (
        stats,
        ex.request_id,
        client,
        scope.get("query_string", b""),
        ex.method,
        ex.path,
        ex.answered,
        answered,
        reader.received if reader is not None else 0,
        ex.bytes_out,
        duration,
        ex.upstream_us,
    )
    if extra is None and observer.plain and ex.trace is None:
        observer.recorded += 1
        count, line = observer.count, observer.line
        if count is not None:
            count(stats, ex.answered, answered, duration, ex.upstream_us)
        if line is not None:
            line(fields, ended)
        return None
    o = new_outcome((*fields, extra, ended))
    observer.record(o)
    if ex.trace is not None:
        ex.trace.end(o)
    return o if o.payment is not None and observer.webhooks is not None else None


def unrouted(
    observer: Observer, scope: Scope, path: str, p: Problem, request_id: bytes, started: int
) -> None:
    """An answer the router gave (404, 405, 400) before any stage ran (`started`: its
    perf_counter_ns())."""
    ended = perf_counter_ns()
    client = scope.get("client")
    o = Outcome(
        observer.unmatched,
        request_id,
        client[0] if client else "",
        scope.get("query_string", b""),
        scope["method"],
        path,
        p.status,
        False,
        0,
        0 if scope["method"] == "HEAD" else len(p.body),
        (ended - started) // 1000,
        None,
        Extra("", p.slug, None, None, (), ""),
        ended,
    )
    observer.record(o)


def _extra(ex: Exchange, mine: Problem | None) -> Extra:
    """The failure, our own answer and the payment of a request that had any."""
    auth = ex.auth
    offers = ex.plan.offers
    paid = refused = None
    challenges: tuple[str, ...] = ()
    settlement = ""
    if auth is not None:
        if auth.outcome:
            paid = Paid.of(auth.payment, auth.outcome, auth.reason)
        if auth.settle_error:  # settling after the upstream answered raised
            settlement = auth.payment.method
    elif mine is not None and offers is not None:  # a paid route's own answer
        refusal = REFUSALS.get(mine.slug)
        if refusal is not None:
            refused = (refusal, *_only_method(offers))
        elif mine.slug == _SETTLEMENT_ERROR:
            settlement = _only_method(offers)[0] or "unknown"
    if mine is not None and mine.status == 402 and offers is not None:
        challenges = _challenged(offers, mine)
    slug = mine.slug if mine is not None else ""
    return Extra(ex.error, slug, paid, refused, challenges, settlement)


def _only_method(offers: RouteOffers) -> tuple[str, str]:
    """(method, currency) when the route offers one method: a refusal is labelled with it."""
    methods = {(o.built.name, o.built.currency) for o in offers.offers}
    return next(iter(methods)) if len(methods) == 1 else ("", "")


def _challenged(offers: RouteOffers, p: Problem) -> tuple[str, ...]:
    """The method names whose challenges a 402 carries (one WWW-Authenticate each)."""
    left = list(offers.offers)
    names = []
    for name, value in p.headers:
        if name != b"www-authenticate":
            continue
        start = value.find(b'method="')
        wire = value[start + 8 : value.find(b'"', start + 8)].decode("latin-1")
        for i, offer in enumerate(left):
            if offer.built.wire_name == wire:
                names.append(offer.built.name)
                del left[i]
                break
    return tuple(names)
