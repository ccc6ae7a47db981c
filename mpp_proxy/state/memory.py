"""The in-process store (memory://): for tests and single-process demos; nothing survives exit."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from time import monotonic_ns
from typing import Any

from mpp_proxy.state.base import (
    HELD_STATUSES,
    BucketSpec,
    OutboxEntry,
    Payment,
    PaymentStatus,
    Taken,
    Totals,
)
from mpp_proxy.state.codec import (
    check_expiry,
    coerce_changes,
    decode_value,
    encode_value,
    gcra,
    statuses,
    sum_delivered,
)

# Counters are swept (expired ones dropped) once there are this many, then at twice the number
# left: memory stays proportional to the live keys, at O(1) amortised cost per request.
_SWEEP_AT = 4096


class MemoryStore:
    """Dicts on one event loop.

    Every method does its check and its write with no `await` in between, so calls from
    concurrent tasks of one loop are atomic without a lock. Not shared across threads/processes.
    """

    __slots__ = (
        "_kv",
        "_kv_expiry",
        "_outbox",
        "_payments",
        "_spent",
        "_spent_ops",
        "_sweep_at",
        "_tats",
    )

    def __init__(self) -> None:
        self._kv: dict[str, str] = {}
        self._kv_expiry: dict[str, float] = {}
        self._payments: dict[str, Payment] = {}
        self._outbox: dict[str, OutboxEntry] = {}
        self._tats: dict[str, int] = {}  # rate buckets: theoretical arrival, monotonic us
        self._spent: dict[str, tuple[int, float]] = {}  # spend: (amount, expires_at)
        self._spent_ops: dict[str, float] = {}  # spend additions made: op -> expires_at
        self._sweep_at = _SWEEP_AT

    def __repr__(self) -> str:
        return "MemoryStore()"

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> bool:
        return True

    # ------------------------------------------------------------------ pympp KV

    def _live(self, key: str, now: float) -> bool:
        if key not in self._kv:
            return False
        expires_at = self._kv_expiry.get(key)
        if expires_at is not None and expires_at <= now:
            del self._kv[key]
            del self._kv_expiry[key]
            return False
        return True

    async def get(self, key: str) -> Any | None:
        if not self._live(key, time.time()):
            return None
        return decode_value(self._kv[key])

    async def put(self, key: str, value: Any) -> None:
        self._kv[key] = encode_value(value)
        self._kv_expiry.pop(key, None)

    async def delete(self, key: str) -> None:
        self._kv.pop(key, None)
        self._kv_expiry.pop(key, None)

    async def put_if_absent(self, key: str, value: Any) -> bool:
        encoded = encode_value(value)
        if self._live(key, time.time()):
            return False
        self._kv[key] = encoded
        return True

    async def put_if_absent_until(self, key: str, value: Any, expires_at: float) -> bool:
        """pympp's optional `ExpiringStore` call: like put_if_absent, gone after `expires_at`."""
        now = time.time()
        check_expiry(expires_at, now)
        encoded = encode_value(value)
        if self._live(key, now):
            return False
        self._kv[key] = encoded
        self._kv_expiry[key] = expires_at
        return True

    # -------------------------------------------------------------------- ledger

    async def insert_payment(self, payment: Payment) -> Payment | None:
        existing = self._payments.get(payment.key)
        if existing is not None:
            return existing
        self._payments[payment.key] = payment
        return None

    async def get_payment(self, key: str) -> Payment | None:
        return self._payments.get(key)

    async def transition(
        self,
        key: str,
        *,
        expect: tuple[PaymentStatus, ...],
        status: PaymentStatus,
        expect_owner: str | None = None,
        lease_expired_before: float | None = None,
        **changes: Any,
    ) -> Payment | None:
        allowed = statuses(expect)
        new_status = PaymentStatus(status)
        updates = coerce_changes(changes)
        row = self._payments.get(key)
        if row is None or row.status not in allowed:
            return None
        if expect_owner is not None and row.owner != expect_owner:
            return None
        if (
            lease_expired_before is not None
            and row.status in HELD_STATUSES
            and not row.lease_until < lease_expired_before
        ):
            return None
        new = replace(row, status=new_status, updated_at=time.time(), **updates)
        self._payments[key] = new
        return new

    async def delete_payment(self, key: str, *, expect_owner: str) -> bool:
        row = self._payments.get(key)
        if row is None or row.status not in HELD_STATUSES or row.owner != expect_owner:
            return False
        del self._payments[key]
        return True

    async def renew_leases(self, owner: str, lease_until: float) -> int:
        now = time.time()
        count = 0
        for key, row in self._payments.items():
            if row.status in HELD_STATUSES and row.owner == owner:
                self._payments[key] = replace(row, lease_until=float(lease_until), updated_at=now)
                count += 1
        return count

    async def forfeit_expired_credits(self, now: float) -> int:
        stamp = time.time()
        count = 0
        for key, row in self._payments.items():
            if row.status is PaymentStatus.CREDITED and row.credit_until < now:
                self._payments[key] = replace(row, status=PaymentStatus.FORFEITED, updated_at=stamp)
                count += 1
        return count

    async def credit_abandoned(self, now: float, credit_until: float) -> int:
        stamp = time.time()
        count = 0
        for key, row in self._payments.items():
            if row.status is PaymentStatus.IN_FLIGHT and row.lease_until < now:
                self._payments[key] = replace(
                    row,
                    status=PaymentStatus.CREDITED,
                    owner="",
                    credit_until=float(credit_until),
                    updated_at=stamp,
                )
                count += 1
        return count

    async def release_abandoned(self, now: float) -> int:
        stamp = time.time()
        count = 0
        for key, row in self._payments.items():
            if row.status is PaymentStatus.PENDING and row.lease_until < now:
                self._payments[key] = replace(
                    row, status=PaymentStatus.RELEASED, owner="", updated_at=stamp
                )
                count += 1
        return count

    async def list_payments(
        self, *, status: PaymentStatus | None = None, limit: int = 100
    ) -> list[Payment]:
        rows = [p for p in self._payments.values() if status is None or p.status == status]
        rows.sort(key=lambda p: (p.created_at, p.key), reverse=True)
        return rows[: max(limit, 0)]

    async def totals(self) -> list[Totals]:
        return sum_delivered(
            (p.service, p.route, p.method, p.currency, p.amount)
            for p in self._payments.values()
            if p.status is PaymentStatus.DELIVERED
        )

    async def count_payments(self, status: PaymentStatus) -> int:
        wanted = PaymentStatus(status)
        return sum(1 for p in self._payments.values() if p.status is wanted)

    # -------------------------------------------------------------------- outbox

    async def outbox_add(self, entry: OutboxEntry) -> bool:
        if entry.id in self._outbox:
            return False
        self._outbox[entry.id] = entry
        return True

    async def outbox_claim(self, now: float, until: float, limit: int) -> list[OutboxEntry]:
        due = sorted(
            (e for e in self._outbox.values() if e.due_at <= now), key=lambda e: (e.due_at, e.id)
        )[: max(limit, 0)]
        claimed = [replace(e, due_at=float(until)) for e in due]
        for e in claimed:
            self._outbox[e.id] = e
        return sorted(claimed, key=lambda e: (e.created_at, e.id))

    async def outbox_retry(self, entry_id: str, due_at: float, attempts: int) -> None:
        entry = self._outbox.get(entry_id)
        if entry is not None:
            self._outbox[entry_id] = replace(entry, due_at=float(due_at), attempts=attempts)

    async def outbox_done(self, entry_id: str) -> None:
        self._outbox.pop(entry_id, None)

    async def outbox_size(self) -> int:
        return len(self._outbox)

    # ------------------------------------------------------------------ limits

    async def take(
        self,
        buckets: Sequence[str],
        specs: Sequence[BucketSpec],
        spend: Sequence[str] = (),
        allowances: Sequence[int] = (),
    ) -> Taken:
        return self.take_now(buckets, specs, spend, allowances)

    @property
    def rate_table(self) -> dict[str, int]:
        """The rate buckets (name -> theoretical arrival time, monotonic microseconds): the
        in-process limiter decides a one-bucket request on it directly (limits.local), with
        `grown` after it adds a bucket."""
        return self._tats

    def grown(self) -> None:
        """A bucket was added to the rate table: sweep it once it is big enough."""
        if len(self._tats) > self._sweep_at:
            self._sweep(monotonic_ns() // 1000)

    def take_now(
        self,
        buckets: Sequence[str],
        specs: Sequence[BucketSpec],
        spend: Sequence[str] = (),
        allowances: Sequence[int] = (),
    ) -> Taken:
        """`take` without a coroutine: the in-process limiter calls this directly."""
        now = time.monotonic_ns() // 1000
        tats = self._tats
        wall = time.time()
        spent = [self._spent_now(k, wall) for k in spend]
        taken, news = gcra([tats.get(k) for k in buckets], specs, spent, allowances, now)
        if taken.ok:
            tats.update(zip(buckets, news, strict=True))
            if len(tats) > self._sweep_at:
                self._sweep(now)
        return taken

    def _spent_now(self, key: str, wall: float) -> int:
        got = self._spent.get(key)
        return got[0] if got is not None and got[1] > wall else 0

    def _sweep(self, now: int) -> None:
        tats = self._tats
        for key in [k for k, tat in tats.items() if tat <= now]:
            del tats[key]
        wall = time.time()
        spent = self._spent
        for key in [k for k, (_, until) in spent.items() if until <= wall]:
            del spent[key]
        ops = self._spent_ops
        for op in [o for o, until in ops.items() if until <= wall]:
            del ops[op]
        self._sweep_at = max(_SWEEP_AT, 2 * (len(tats) + len(spent)))

    async def add_spent(self, key: str, amount: int, expires_at: float, op: str) -> None:
        if op in self._spent_ops:
            return
        self._spent_ops[op] = float(expires_at)
        wall = time.time()
        self._spent[key] = (self._spent_now(key, wall) + amount, float(expires_at))
        if len(self._spent_ops) > self._sweep_at:
            self._sweep(time.monotonic_ns() // 1000)
