"""Plain-text ledger tables (for `mpp-proxy ledger` and `credits`): pure functions of rows."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from mpp_proxy.state.base import Payment, Totals
from mpp_proxy.state.query import DayTotal, display_amount, lookup_decimals


class CurrencyUnit(Protocol):
    """Anything naming a currency and its decimals (every configured payment method does)."""

    @property
    def currency(self) -> str: ...

    @property
    def decimals(self) -> int: ...


def currency_decimals(methods: Iterable[CurrencyUnit]) -> dict[str, int]:
    """currency -> decimals from configured methods, e.g. `currency_decimals(config.methods)`."""
    return {m.currency: m.decimals for m in methods}


def format_totals(totals: Sequence[Totals], *, decimals: Mapping[str, int] | None = None) -> str:
    """Revenue per service, route, method and currency, then one total line per currency."""
    if not totals:
        return "no delivered payments\n"
    units = decimals or {}
    rows: list[list[str]] = []
    per_currency: dict[str, list[int]] = {}
    for t in totals:
        d = lookup_decimals(units, t.currency)
        rows.append(
            [t.service, t.route, t.method, t.currency, str(t.count), str(t.amount),
             display_amount(t.amount, d)]
        )  # fmt: skip
        acc = per_currency.setdefault(t.currency, [0, 0])
        acc[0] += t.count
        acc[1] += t.amount
    footer = [
        ["total", "", "", currency, str(n), str(amount),
         display_amount(amount, lookup_decimals(units, currency))]
        for currency, (n, amount) in sorted(per_currency.items())
    ]  # fmt: skip
    header = ["service", "route", "method", "currency", "count", "amount", "display"]
    return _table(header, rows, footer, right={4, 5, 6}, drop_empty={6})


def format_payments(
    payments: Sequence[Payment],
    *,
    decimals: Mapping[str, int] | None = None,
) -> str:
    """One line per payment, in the order given (the store lists newest first); UTC times."""
    if not payments:
        return "no payments\n"
    units = decimals or {}
    rows = [
        [
            _utc(p.created_at),
            str(p.status),
            p.service,
            p.route,
            p.method,
            p.amount,
            display_amount(p.amount, lookup_decimals(units, p.currency)),
            p.currency,
            str(p.attempts),
            p.reference or "-",
            p.key[:12],
        ]
        for p in payments
    ]
    header = [
        "created (UTC)", "status", "service", "route", "method", "amount", "display",
        "currency", "tries", "reference", "key",
    ]  # fmt: skip
    return _table(header, rows, [], right={5, 6, 8}, drop_empty={6})


def format_days(days: Sequence[DayTotal], *, decimals: Mapping[str, int] | None = None) -> str:
    """Delivered revenue per UTC day and currency, oldest first."""
    if not days:
        return "no delivered payments\n"
    units = decimals or {}
    rows = [
        [d.day, d.currency, str(d.count), str(d.amount),
         display_amount(d.amount, lookup_decimals(units, d.currency))]
        for d in days
    ]  # fmt: skip
    header = ["day", "currency", "count", "amount", "display"]
    return _table(header, rows, [], right={2, 3, 4}, drop_empty={4})


def format_credits(
    payments: Sequence[Payment], *, decimals: Mapping[str, int] | None = None
) -> str:
    """Open credits: when they lapse, what they are for, the key to void one with."""
    if not payments:
        return "no open credits\n"
    units = decimals or {}
    rows = [
        [p.key[:12], _utc(p.credit_until), p.service, p.route, p.method, p.amount,
         display_amount(p.amount, lookup_decimals(units, p.currency)), p.currency,
         str(p.attempts), p.reference or "-"]
        for p in payments
    ]  # fmt: skip
    header = [
        "key", "redeemable until (UTC)", "service", "route", "method", "amount", "display",
        "currency", "tries", "reference",
    ]  # fmt: skip
    return _table(header, rows, [], right={5, 6, 8}, drop_empty={6})


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


def _table(
    header: list[str],
    rows: list[list[str]],
    footer: list[list[str]],
    *,
    right: set[int],
    drop_empty: set[int],
) -> str:
    everything = rows + footer
    # A column that is empty everywhere (display units when no decimals are known) is left out.
    keep = [i for i in range(len(header)) if i not in drop_empty or any(r[i] for r in everything)]
    widths = {i: max(len(header[i]), *(len(r[i]) for r in everything)) for i in keep}

    def line(cells: list[str]) -> str:
        parts = [
            cells[i].rjust(widths[i]) if i in right else cells[i].ljust(widths[i]) for i in keep
        ]
        return "  ".join(parts).rstrip()

    out = [line(header), "  ".join("-" * widths[i] for i in keep)]
    out.extend(line(r) for r in rows)
    if footer:
        out.append("  ".join("-" * widths[i] for i in keep))
        out.extend(line(r) for r in footer)
    return "\n".join(out) + "\n"
