"""How ledger rows and KV values are checked and encoded, shared by every store backend."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from typing import Any

import orjson

from mpp_proxy.state.base import BucketSpec, Payment, PaymentStatus, Taken, Totals

PAYMENT_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Payment))
STATUS_INDEX = PAYMENT_FIELDS.index("status")
FLOAT_FIELDS = frozenset({"lease_until", "credit_until", "created_at", "updated_at"})
INT_FIELDS = frozenset({"attempts"})
# Columns added after the first schema: rows written before them take the dataclass default.
DEFAULTED_FIELDS = frozenset({"refund", "note"})
# `key` identifies the row, `status` has its own argument, `created_at` orders the ledger and
# `updated_at` belongs to the store.
CHANGEABLE_FIELDS = frozenset(PAYMENT_FIELDS) - {"key", "status", "created_at", "updated_at"}


def coerce_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """Validate `transition(**changes)`: known columns only, each with its column's type.

    Raises TypeError, like an unexpected keyword argument would, so a typo never silently
    becomes a no-op on one backend and a crash on another.
    """
    out: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in CHANGEABLE_FIELDS:
            raise TypeError(f"transition() cannot change {name!r}")
        out[name] = _coerce(name, value)
    return out


def _coerce(name: str, value: Any) -> Any:
    if name in FLOAT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(f"{name} must be a number, not {type(value).__name__}")
        return float(value)
    if name in INT_FIELDS:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        return value
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    return value


def statuses(expect: Iterable[PaymentStatus | str]) -> tuple[PaymentStatus, ...]:
    """Normalise `expect`; an empty tuple is a caller bug, not "match nothing"."""
    out = tuple(PaymentStatus(s) for s in expect)
    if not out:
        raise ValueError("expect must name at least one status")
    return out


def payment_from_row(row: Iterable[Any]) -> Payment:
    """A Payment from column values in PAYMENT_FIELDS order (SQL rows)."""
    values = list(row)
    values[STATUS_INDEX] = PaymentStatus(values[STATUS_INDEX])
    return Payment(*values)


def payment_to_row(payment: Payment) -> tuple[Any, ...]:
    """Column values in PAYMENT_FIELDS order, status as its plain string."""
    return tuple(
        str(getattr(payment, name)) if name == "status" else getattr(payment, name)
        for name in PAYMENT_FIELDS
    )


def payment_to_strings(payment: Payment) -> dict[str, str]:
    """Every field as a string (Redis hashes); floats keep full precision via repr."""
    out: dict[str, str] = {}
    for name in PAYMENT_FIELDS:
        value = getattr(payment, name)
        out[name] = repr(float(value)) if name in FLOAT_FIELDS else str(value)
    return out


def payment_from_strings(data: Mapping[str, str]) -> Payment:
    """Inverse of payment_to_strings (rows written before a column was added read its default)."""
    kwargs: dict[str, Any] = {}
    for name in PAYMENT_FIELDS:
        raw = data.get(name)
        if raw is None and name in DEFAULTED_FIELDS:
            continue  # a row written before the column existed
        assert raw is not None, name
        if name in FLOAT_FIELDS:
            kwargs[name] = float(raw)
        elif name in INT_FIELDS:
            kwargs[name] = int(raw)
        elif name == "status":
            kwargs[name] = PaymentStatus(raw)
        else:
            kwargs[name] = raw
    return Payment(**kwargs)


def encode_value(value: Any) -> str:
    """KV values are JSON: every backend returns the same shapes (tuples come back as lists)."""
    return orjson.dumps(value).decode()


def decode_value(text: str | bytes) -> Any:
    return orjson.loads(text)


def check_expiry(expires_at: float, now: float) -> None:
    # Same contract as pympp's stores: a past or infinite deadline is a caller bug.
    if not math.isfinite(expires_at) or expires_at <= now:
        raise ValueError("expires_at must be a finite future Unix timestamp")


def sum_delivered(rows: Iterable[tuple[str, str, str, str, str]]) -> list[Totals]:
    """Group (service, route, method, currency, amount) rows; amounts summed as exact ints."""
    groups: dict[tuple[str, str, str, str], list[int]] = {}
    for service, route, method, currency, amount in rows:
        acc = groups.setdefault((service, route, method, currency), [0, 0])
        acc[0] += 1
        acc[1] += int(amount)
    return [
        Totals(service=s, route=r, method=m, currency=c, count=n, amount=total)
        for (s, r, m, c), (n, total) in sorted(groups.items())
    ]


def gcra(
    tats: Sequence[int | None],
    specs: Sequence[BucketSpec],
    spent: Sequence[int],
    allowances: Sequence[int],
    now: int,
) -> tuple[Taken, list[int]]:
    """The decision `Store.take` makes (the Redis script makes the same in Lua), and the new
    arrival times to store when it is `ok`. Times in integer microseconds."""
    news: list[int] = []
    used: list[int] = []
    ok = True
    for tat, (interval, capacity) in zip(tats, specs, strict=True):
        new = (tat if tat is not None and tat > now else now) + interval
        news.append(new)
        used.append(new - now)
        if new - now > capacity:
            ok = False
    for have, allowance in zip(spent, allowances, strict=True):
        if have > allowance:
            ok = False
    return Taken(ok, tuple(used), tuple(spent)), news
