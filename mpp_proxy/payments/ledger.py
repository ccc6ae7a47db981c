"""The payment ledger's state machine: transitions as a table, typed updates, lease upkeep.

One row per credential (key = SHA-256 of the credential token). Settled before forwarding:

    (none) --claim--> in_flight --settled--> in_flight --deliver--> delivered   (final: 403)
    in_flight --credit--> credited --redeem (same credential and request, in time)--> in_flight
    credited --forfeit (credit_until passed)--> forfeited                          (final: 403)
    in_flight --refund (Stripe, on_failure = "refund")--> refunded                 (final: 403)
    credited --void (an operator's decision, who and why in `note`)--> voided    (final: 403)
    in_flight whose lease expired (its process died) --take_over--> in_flight (next presenter)
    in_flight --release (verification failed: nothing was spent)--> (none)

Settled after the upstream answered with success (checked first, nothing moves until then):

    (none) --claim--> pending --settling (success head)--> in_flight --settled--> in_flight
    pending --unsettled (the upstream failed first)--> released --reclaim--> pending
    pending whose lease expired --resume--> pending (next presenter); the sweep: --> released
    in_flight --settle_failed (settling was refused)--> settle_failed                (final: 402)

Every change is one conditional store write (`Store.transition`): the row moves only when it is
still in the state the table says the event starts from, so concurrent requests and processes
never both win.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass, fields, replace
from enum import Enum
from typing import Any

from mpp_proxy.state.base import HELD_STATUSES, Payment, PaymentStatus, Store

log = logging.getLogger("mpp_proxy.payments")

IN_FLIGHT = PaymentStatus.IN_FLIGHT
PENDING = PaymentStatus.PENDING
RELEASED = PaymentStatus.RELEASED
DELIVERED = PaymentStatus.DELIVERED
CREDITED = PaymentStatus.CREDITED
FORFEITED = PaymentStatus.FORFEITED
SETTLE_FAILED = PaymentStatus.SETTLE_FAILED
REFUNDED = PaymentStatus.REFUNDED
VOIDED = PaymentStatus.VOIDED


class Event(Enum):
    SETTLED = "settled"  # the payment settled: its reference is recorded, the claim stays
    DELIVER = "deliver"  # the upstream answered with success and the body reached the client
    CREDIT = "credit"  # settled but not delivered: kept for a retry with the same credential
    REDEEM = "redeem"  # a retry spends the credit
    TAKE_OVER = "take_over"  # the claim's process died (lease expired): the presenter takes it
    FORFEIT = "forfeit"  # the credit was not claimed in time
    REFUND = "refund"  # settled but not delivered: given back
    SETTLING = "settling"  # a pending claim's upstream answered with success: settle it now
    UNSETTLED = "unsettled"  # a pending claim's upstream failed first: nothing was charged
    RECLAIM = "reclaim"  # a released credential is presented again
    RESUME = "resume"  # a pending claim's process died: the presenter takes it
    SETTLE_FAILED = "settle_failed"  # settling after the upstream answered was refused
    VOID = "void"  # an operator voided the credit


# (state, event) -> next state. Anything not listed is not a transition.
TRANSITIONS: dict[tuple[PaymentStatus, Event], PaymentStatus] = {
    (IN_FLIGHT, Event.SETTLED): IN_FLIGHT,
    (IN_FLIGHT, Event.DELIVER): DELIVERED,
    (IN_FLIGHT, Event.CREDIT): CREDITED,
    (CREDITED, Event.REDEEM): IN_FLIGHT,
    (IN_FLIGHT, Event.TAKE_OVER): IN_FLIGHT,
    (CREDITED, Event.FORFEIT): FORFEITED,
    (IN_FLIGHT, Event.REFUND): REFUNDED,
    (PENDING, Event.SETTLING): IN_FLIGHT,
    (PENDING, Event.UNSETTLED): RELEASED,
    (RELEASED, Event.RECLAIM): PENDING,
    (PENDING, Event.RESUME): PENDING,
    (IN_FLIGHT, Event.SETTLE_FAILED): SETTLE_FAILED,
    (CREDITED, Event.VOID): VOIDED,
}
# Events only the claim's holder may apply (the others apply to rows nobody holds).
_HOLDER_EVENTS = frozenset(
    {
        Event.SETTLED,
        Event.DELIVER,
        Event.CREDIT,
        Event.REFUND,
        Event.SETTLING,
        Event.UNSETTLED,
        Event.SETTLE_FAILED,
    }
)
# Events that end a claim: the row is held by nobody afterwards.
_RELEASING_EVENTS = frozenset({Event.UNSETTLED, Event.SETTLE_FAILED, Event.REFUND})


# The table read per event, as the hot path asks it: where an event may start, where it ends.
_SOURCES = {e: tuple(state for state, ev in TRANSITIONS if ev is e) for e in Event}
_TARGETS = {e: end for (_, e), end in TRANSITIONS.items()}


def sources(event: Event) -> tuple[PaymentStatus, ...]:
    """The states `event` starts from."""
    return _SOURCES[event]


def target(event: Event) -> PaymentStatus:
    """The state `event` ends in (one per event in this table)."""
    return _TARGETS[event]


@dataclass(frozen=True, slots=True)
class Update:
    """The columns an event changes; None leaves a column as it is."""

    reference: str | None = None
    payer: str | None = None
    owner: str | None = None
    lease_until: float | None = None
    credit_until: float | None = None
    attempts: int | None = None
    refund: str | None = None
    note: str | None = None

    def columns(self) -> dict[str, Any]:
        return {n: v for n in _UPDATE_FIELDS if (v := getattr(self, n)) is not None}


_UPDATE_FIELDS = tuple(f.name for f in fields(Update))


class Presented(Enum):
    """What to do with a credential the ledger already has a row for."""

    USED = "used"  # delivered: 403
    FORFEITED = "forfeited"  # 403
    REFUNDED = "refunded"  # given back: 403
    SETTLE_FAILED = "settle_failed"  # its settlement was refused: 402, pay a fresh challenge
    VOIDED = "voided"  # 403
    BUSY = "busy"  # another request holds it: 409
    OTHER_REQUEST = "other_request"  # bought for another request: 402
    FORFEIT = "forfeit"  # its credit just expired: forfeit it, then 403
    REDEEM = "redeem"  # spend the credit
    TAKE_OVER = "take_over"  # its holder died: take the claim over
    RECLAIM = "reclaim"  # nothing was charged for it: check it again and forward
    RESUME = "resume"  # its holder died before settling: take the pending claim over


def presented(row: Payment, *, now: float, request: str, unrecorded: bool) -> Presented:
    """Decide a known credential from its row alone (no I/O). `unrecorded`: this process has
    not yet recorded how its last attempt with it ended."""
    status = row.status
    final = _FINAL.get(status)
    if final is not None:
        return final
    if status in HELD_STATUSES and row.lease_until >= now:
        return Presented.BUSY
    if row.scope != request:
        return Presented.OTHER_REQUEST
    if unrecorded:
        # Until the late write lands, a new claim could be overwritten by it while being served.
        return Presented.BUSY
    if status is CREDITED:
        return Presented.FORFEIT if row.credit_until < now else Presented.REDEEM
    if status is RELEASED:
        return Presented.RECLAIM
    if status is PENDING:
        return Presented.RESUME
    return Presented.TAKE_OVER


_FINAL = {
    DELIVERED: Presented.USED,
    FORFEITED: Presented.FORFEITED,
    REFUNDED: Presented.REFUNDED,
    SETTLE_FAILED: Presented.SETTLE_FAILED,
    VOIDED: Presented.VOIDED,
}


async def void_credit(store: Store, key: str, *, by: str, reason: str) -> Payment | None:
    """Void credit `key` (an operator's decision): it can no longer be redeemed, and its row
    keeps who voided it, when and why. None when the row was no longer a credit."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    note = f"voided by {by} at {stamp}: {reason}"
    return await store.transition(
        key,
        expect=sources(Event.VOID),
        status=target(Event.VOID),
        **Update(credit_until=0.0, note=note).columns(),
    )


_OWNERS: dict[int, str] = {}


def process_owner() -> str:
    """This process's lease owner id (host, pid, random), made after any fork."""
    pid = os.getpid()
    owner = _OWNERS.get(pid)
    if owner is None:
        owner = _OWNERS[pid] = f"{socket.gethostname()}:{pid}:{os.urandom(6).hex()}"
    return owner


class Ledger:
    """The gate's view of the store's payment rows: applies the table, keeps leases alive."""

    def __init__(
        self, store: Store, *, owner: str, lease_seconds: float, credit_ttl: float
    ) -> None:
        self.store = store
        self.owner = owner
        self.lease_seconds = lease_seconds
        self.credit_ttl = credit_ttl
        # Outcomes whose write failed or was cancelled: retried by the upkeep task.
        self._pending: dict[str, tuple[Event, Update]] = {}
        self._task: asyncio.Task[None] | None = None

    # ---------------------------------------------------------------- transitions

    async def apply(
        self, key: str, event: Event, update: Update = Update(), *, expired_before: float = 0.0
    ) -> Payment | None:
        """Move row `key` by `event`; None when it was not in a state the event starts from."""
        if event in _RELEASING_EVENTS:
            update = replace(update, owner="")
        return await self.store.transition(
            key,
            expect=sources(event),
            status=target(event),
            expect_owner=self.owner if event in _HOLDER_EVENTS else None,
            lease_expired_before=expired_before or None,
            **update.columns(),
        )

    async def claim(self, row: Payment) -> Payment | None:
        """Insert a new in-flight claim; the existing row when the credential is known."""
        return await self.store.insert_payment(row)

    async def get(self, key: str) -> Payment | None:
        return await self.store.get_payment(key)

    async def release(self, key: str) -> None:
        """Drop our claim: verification failed, nothing was spent."""
        with contextlib.suppress(Exception):
            await self.store.delete_payment(key, expect_owner=self.owner)

    def lease(self, now: float) -> float:
        return now + self.lease_seconds

    def unrecorded(self, key: str) -> bool:
        return key in self._pending

    def defer(self, key: str, event: Event, update: Update) -> None:
        """Keep an outcome the store did not take; the upkeep task writes it."""
        self._pending[key] = (event, update)

    async def finish(self, key: str, event: Event, update: Update = Update()) -> None:
        """Record how a held claim ended (DELIVER, CREDIT, UNSETTLED, ...); never lost, even if
        cancelled."""
        try:
            row = await self.apply(key, event, update)
        except asyncio.CancelledError:
            # The write may or may not have happened; the upkeep task makes sure it does.
            self.defer(key, event, update)
            raise
        except Exception as exc:
            log.warning("ledger update to %s failed (%s); retrying", target(event), _name(exc))
            self.defer(key, event, update)
            return
        if row is None:
            log.warning("ledger row %s.. was no longer held by this process", key[:12])

    # ---------------------------------------------------------------- upkeep

    async def start(self) -> None:
        """Sweep abandoned claims once, then keep this instance's leases alive."""
        if self._task is not None:
            return
        await self.sweep()
        self._task = asyncio.create_task(self._maintain(), name="mpp-proxy payment leases")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _maintain(self) -> None:
        tick = max(0.05, self.lease_seconds / 3)
        sweep_every = max(tick, min(30.0, self.credit_ttl / 4))
        next_sweep = time.monotonic() + sweep_every
        while True:
            await asyncio.sleep(tick)
            try:
                await self.store.renew_leases(self.owner, time.time() + self.lease_seconds)
                await self.retry_pending()
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + sweep_every
                    await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("payment lease upkeep failed: %s", _name(exc))

    async def sweep(self) -> None:
        now = time.time()
        try:
            await self.store.forfeit_expired_credits(now)
            await self.store.credit_abandoned(now, now + self.credit_ttl)
            await self.store.release_abandoned(now)
        except Exception as exc:
            log.warning("payment ledger sweep failed: %s", _name(exc))

    async def retry_pending(self) -> None:
        for key, (event, update) in list(self._pending.items()):
            try:
                await self.apply(key, event, update)
            except Exception:
                continue
            self._pending.pop(key, None)


def _name(exc: BaseException) -> str:
    return type(exc).__name__
