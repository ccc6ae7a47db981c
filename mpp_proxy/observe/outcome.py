"""What a finished request was, as plain data the core fills once: the one record every sink
(metrics, access log, events, tracing, webhooks) reads, and the payment-outcome vocabulary."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any, NamedTuple

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
        OutcomeKind("credited", undelivered=True, webhooks=("payment.credited", "delivery.failed")),
        OutcomeKind("forfeited", webhooks=("payment.forfeited",)),
        OutcomeKind("refused_replay"),
        OutcomeKind("refused_invalid"),
        OutcomeKind("refused_expired"),
    )
}

# Payment problems (their type slugs, PROTOCOL.md) and the refusal outcome each one records.
REFUSALS: dict[str, str] = {
    "credential-used": "refused_replay",
    "payment-in-progress": "refused_replay",
    "payment-expired": "refused_expired",
    "credit-forfeited": "refused_expired",
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


class Outcome(NamedTuple):
    """One finished request. A tuple: the hot path builds it with `new_outcome((...))`, one C
    call, rather than through the generated keyword-parsing __new__."""

    request_id: str
    client: str
    method: str
    path: str  # without the query
    query: str
    service: str  # "" when no route matched
    route: str  # the configured route key, "" when none matched
    status: int
    source: str  # "proxy": our own answer; "upstream": the upstream's
    bytes_in: int
    bytes_out: int
    duration: float  # seconds, request start to the last byte sent
    upstream: float | None  # seconds to the upstream's response head
    error: str  # the failure's kind ("timeout", "refused", ...), "" when none
    problem: str  # the problem type slug of our own answers, "" otherwise
    payment: Paid | None  # a credential was accepted: how its payment ended
    refused: tuple[str, str, str] | None  # (outcome, method, currency) of a refused credential
    challenges: tuple[str, ...]  # method names a 402 offered
    settlement_error: str  # the method whose backend failed (500), "" when none
    ended: float  # time.perf_counter() when it finished (the log turns it into a time of day)


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
