"""Reading the ledger for operators: filters, totals per day and currency, and the plain
document of a payment, shared by `mpp-proxy ledger`, `mpp-proxy credits` and the admin API."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from mpp_proxy.state.base import Payment, PaymentStatus, Store

__all__ = [
    "DayTotal",
    "LedgerQuery",
    "daily_totals",
    "display_amount",
    "find_payment",
    "parse_since",
    "payment_document",
    "read_ledger",
]

# Rows fetched per round when filtering (the store lists newest first, with a limit only).
_FIRST_BATCH = 500


@dataclass(frozen=True, slots=True)
class LedgerQuery:
    """Which payments: created at or after `since` (unix seconds), of one service, route and
    status; at most `limit` (None: all), newest first."""

    since: float | None = None
    service: str | None = None
    route: str | None = None
    status: PaymentStatus | None = None
    limit: int | None = None

    def matches(self, payment: Payment) -> bool:
        return (
            (self.since is None or payment.created_at >= self.since)
            and (self.service is None or payment.service == self.service)
            and (self.route is None or payment.route == self.route)
        )


async def read_ledger(store: Store, query: LedgerQuery) -> list[Payment]:
    """The payments matching `query`, newest first.

    The store lists newest first: rows are fetched in growing batches until `limit` matched,
    the rows run older than `since`, or there are no more.
    """
    want = query.limit
    batch = _FIRST_BATCH if want is None else max(_FIRST_BATCH, want * 4)
    while True:
        rows = await store.list_payments(status=query.status, limit=batch)
        found = [p for p in rows if query.matches(p)]
        exhausted = len(rows) < batch
        older = query.since is not None and bool(rows) and rows[-1].created_at < query.since
        if exhausted or older or (want is not None and len(found) >= want):
            return found if want is None else found[:want]
        batch *= 4


async def find_payment(store: Store, key: str, status: PaymentStatus | None = None) -> Payment:
    """The one row whose key is `key` or starts with it (8 hex characters at least, as the
    ledger shows them). KeyError names the problem: none, or several."""
    text = key.strip().lower()
    if len(text) == 64:
        row = await store.get_payment(text)
        if row is not None and (status is None or row.status is status):
            return row
        raise KeyError(f"no {status or 'payment'} with key {text[:12]}..")
    if len(text) < 8 or any(c not in "0123456789abcdef" for c in text):
        raise KeyError("a key is the hex ledger key, or at least its first 8 characters")
    rows = await read_ledger(store, LedgerQuery(status=status))
    found = [p for p in rows if p.key.startswith(text)]
    if not found:
        raise KeyError(f"no {status or 'payment'} with a key starting {text}")
    if len(found) > 1:
        raise KeyError(f"{len(found)} rows have keys starting {text}: give more characters")
    return found[0]


@dataclass(frozen=True, slots=True)
class DayTotal:
    """Delivered payments of one UTC day in one currency."""

    day: str  # YYYY-MM-DD
    currency: str
    count: int
    amount: int  # base units


def daily_totals(payments: list[Payment]) -> list[DayTotal]:
    """Delivered payments summed per UTC day (of their creation) and currency, oldest first."""
    groups: dict[tuple[str, str], list[int]] = {}
    for p in payments:
        if p.status is not PaymentStatus.DELIVERED:
            continue
        day = time.strftime("%Y-%m-%d", time.gmtime(p.created_at))
        acc = groups.setdefault((day, p.currency), [0, 0])
        acc[0] += 1
        acc[1] += int(p.amount)
    return [DayTotal(d, c, n, a) for (d, c), (n, a) in sorted(groups.items())]


def display_amount(amount: int | str, decimals: int | None) -> str:
    """Base units in display units, all decimals kept ("1500000", 6 -> "1.500000").

    "" when decimals are unknown, "?" when the amount is not an integer string.
    """
    if decimals is None:
        return ""
    try:
        n = int(amount)
    except ValueError:
        return "?"
    # String arithmetic: exact for any size (Decimal would round past 28 digits).
    digits = str(abs(n))
    sign = "-" if n < 0 else ""
    if decimals <= 0:
        return sign + digits + "0" * -decimals
    digits = digits.rjust(decimals + 1, "0")
    return f"{sign}{digits[:-decimals]}.{digits[-decimals:]}"


def lookup_decimals(units: Mapping[str, int], currency: str) -> int | None:
    """The decimals of `currency`; token addresses compare case-insensitively."""
    found = units.get(currency)
    if found is None:
        found = {k.lower(): v for k, v in units.items()}.get(currency.lower())
    return found


def _iso(ts: float) -> str | None:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)) if ts else None


def payment_document(payment: Payment, decimals: Mapping[str, int]) -> dict[str, Any]:
    """Every column of a row, JSON-ready: amounts as strings (base units, and display units
    when the currency's decimals are known), times as unix seconds and ISO 8601 UTC."""
    doc: dict[str, Any] = {f.name: getattr(payment, f.name) for f in fields(Payment)}
    doc["status"] = str(payment.status)
    doc["display"] = display_amount(payment.amount, lookup_decimals(decimals, payment.currency))
    for name in ("created_at", "updated_at", "credit_until", "lease_until"):
        doc[f"{name}_iso"] = _iso(doc[name])
    return doc


def parse_since(text: str) -> float:
    """Unix seconds from "2026-11-29", "2026-11-29T06:00:00Z" (UTC when no zone) or seconds."""
    from datetime import UTC, datetime

    value = text.strip()
    try:
        return float(value)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"since {text!r} is not a date: write 2026-11-29, 2026-11-29T06:00:00Z or unix seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
