"""The store protocol: pympp's replay key-value calls plus the payment ledger."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple, Protocol


class PaymentStatus(StrEnum):
    """Where a settled (or settling) payment stands.

    in_flight      -- claimed by one request (settling, or settled and being forwarded); `owner`
                      holds a lease.
    pending        -- claimed by one request whose payment settles after the upstream answered:
                      checked, nothing moved yet; `owner` holds a lease.
    released       -- a pending claim whose request failed before settlement (or whose process
                      died): nothing was charged; the credential may be presented again.
    delivered      -- the upstream answered with success and the body was sent: final.
    credited       -- settled but not delivered; the same credential may redeem it until
                      `credit_until`.
    forfeited      -- a credit that was not claimed in time: final.
    settle_failed  -- the upstream answered with success but settling was refused: nothing was
                      charged and the answer was not delivered: final.
    refunded       -- settled, not delivered, and given back (`refund` names the refund): final.
    voided         -- a credit an operator voided (`note` says who and why): final.
    """

    IN_FLIGHT = "in_flight"
    PENDING = "pending"
    RELEASED = "released"
    DELIVERED = "delivered"
    CREDITED = "credited"
    FORFEITED = "forfeited"
    SETTLE_FAILED = "settle_failed"
    REFUNDED = "refunded"
    VOIDED = "voided"


# Claims a live request holds: their leases are renewed, and a dead holder's are taken over.
HELD_STATUSES = (PaymentStatus.IN_FLIGHT, PaymentStatus.PENDING)


@dataclass(frozen=True, slots=True)
class Payment:
    """One ledger row. `key` is the SHA-256 (hex) of the exact credential the client presented."""

    key: str
    challenge_id: str
    method: str  # the operator's method name ("usdc")
    kind: str  # tempo | stripe | evm | test
    reference: str  # tx hash, pi_..., "" until settled
    amount: str  # base units, decimal string
    currency: str
    service: str
    route: str  # "POST /v1/chat/completions" as configured
    scope: (
        str  # "POST /openai/v1/chat/completions?x=1": the exact request the credential is bound to
    )
    payer: str  # credential source (DID) or ""
    status: PaymentStatus
    owner: str  # process instance that holds the in-flight lease, "" otherwise
    lease_until: float  # unix seconds; an in_flight row past its lease is abandoned (process died)
    credit_until: float  # unix seconds; 0 unless credited
    attempts: int  # how many times this credential was forwarded upstream
    created_at: float
    updated_at: float
    refund: str = ""  # the refund's id (re_...) once refunded
    note: str = ""  # an operator's record on the row: who voided the credit, when and why


@dataclass(frozen=True, slots=True)
class Totals:
    """Revenue for one (service, route, method, currency) group, delivered payments only."""

    service: str
    route: str
    method: str
    currency: str
    count: int
    amount: int  # base units


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One webhook delivery waiting in the outbox: sent at least once, deleted once received."""

    id: str  # unique per event and destination
    target: str  # the destination (webhook URL)
    body: str  # the JSON body, sent as it is
    attempts: int  # deliveries tried so far
    due_at: float  # unix seconds: when it may be sent (or retried) next
    created_at: float


class Taken(NamedTuple):
    """One admission decision over rate buckets and spend counters (`Store.take`).

    `used[i]`: microseconds of bucket i's capacity in use, this request counted (GCRA: its
    theoretical arrival time minus now); the request fits bucket i when `used[i]` is at most
    the bucket's capacity. `spent[j]`: what spend counter j holds. Nothing was written unless
    `ok`. (A named tuple: made once per limited request, it costs a tenth of a dataclass.)
    """

    ok: bool
    used: tuple[int, ...]
    spent: tuple[int, ...]


# A rate bucket's shape: (emission interval, capacity), both in microseconds.
BucketSpec = tuple[int, int]


class Store(Protocol):
    """Everything the gateway keeps. Backends: memory://, sqlite:///path, redis://host:port/db.

    The first four calls are pympp's `mpp.store.Store` protocol, so a Store can be handed to pympp
    methods directly for their replay protection.
    """

    async def get(self, key: str) -> Any | None: ...
    async def put(self, key: str, value: Any) -> None: ...
    async def delete(self, key: str) -> None: ...
    async def put_if_absent(self, key: str, value: Any) -> bool: ...
    async def put_if_absent_until(self, key: str, value: Any, expires_at: float) -> bool:
        """Like put_if_absent; the key is gone after `expires_at` (pympp's ExpiringStore)."""
        ...

    async def open(self) -> None:
        """Connect / create tables. Idempotent."""
        ...

    async def close(self) -> None: ...

    async def ping(self) -> bool:
        """True when the backend answers (for /readyz)."""
        ...

    async def insert_payment(self, payment: Payment) -> Payment | None:
        """Insert when no row has this key and return None; else return the existing row."""
        ...

    async def get_payment(self, key: str) -> Payment | None: ...

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
        """Atomically move a row to `status` (and set `changes`) when its status is in `expect`.

        With `expect_owner`, the row's owner must also match; with `lease_expired_before`, an
        in_flight row must have `lease_until < lease_expired_before` (taking over a dead process's
        claim). Returns the updated row, or None when the condition did not hold.
        `updated_at` is set by the store.
        """
        ...

    async def delete_payment(self, key: str, *, expect_owner: str) -> bool:
        """Remove an in_flight or pending row this owner made (verification failed): nothing
        was spent."""
        ...

    async def renew_leases(self, owner: str, lease_until: float) -> int:
        """Extend every in_flight and pending row held by `owner`; returns how many."""
        ...

    async def forfeit_expired_credits(self, now: float) -> int:
        """Credited rows whose credit_until < now become forfeited; returns how many."""
        ...

    async def credit_abandoned(self, now: float, credit_until: float) -> int:
        """In_flight rows whose lease_until < now (their process died) become credited.

        Sets owner "" and the given credit_until; returns how many. For start-up and periodic
        sweeps, so a payment cut off by kill -9 shows as a credit even before its retry.
        """
        ...

    async def release_abandoned(self, now: float) -> int:
        """Pending rows whose lease_until < now (their process died before settling) become
        released, owner ""; returns how many. Nothing was charged for them."""
        ...

    async def list_payments(
        self, *, status: PaymentStatus | None = None, limit: int = 100
    ) -> list[Payment]:
        """Newest first."""
        ...

    async def totals(self) -> list[Totals]: ...

    async def count_payments(self, status: PaymentStatus) -> int:
        """How many rows are in `status` (for the credits_outstanding gauge)."""
        ...

    async def outbox_add(self, entry: OutboxEntry) -> bool:
        """Queue a delivery; False (and nothing changes) when its id is already queued."""
        ...

    async def outbox_claim(self, now: float, until: float, limit: int) -> list[OutboxEntry]:
        """Up to `limit` entries due by `now`, oldest due first, each moved to `due_at = until`
        in the same step: a concurrent claimer (another worker) skips them until then."""
        ...

    async def outbox_retry(self, entry_id: str, due_at: float, attempts: int) -> None:
        """A delivery failed: try again at `due_at`."""
        ...

    async def outbox_done(self, entry_id: str) -> None:
        """A delivery was received: drop it."""
        ...

    async def outbox_size(self) -> int: ...

    async def take(
        self,
        buckets: Sequence[str],
        specs: Sequence[BucketSpec],
        spend: Sequence[str] = (),
        allowances: Sequence[int] = (),
    ) -> Taken:
        """Count one request in every rate bucket, atomically and only if it fits them all and
        no spend counter is over its allowance (`spent[j] > allowances[j]` refuses).

        Buckets are GCRA: each stores a theoretical arrival time; a request moves it on by the
        emission interval and fits while it stays within the capacity of now. One round trip.
        """
        ...

    async def add_spent(self, key: str, amount: int, expires_at: float, op: str) -> None:
        """Add `amount` to a spend counter kept until `expires_at` (unix seconds); an `op` seen
        before (a retried call, a payment recorded twice) is counted once."""
        ...
