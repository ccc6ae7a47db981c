"""`mpp-proxy ledger`: recent payments and revenue totals read from the configured state store."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from mpp_proxy.cli.banner import method_currency
from mpp_proxy.cli.serve import check_store, load
from mpp_proxy.config.model import Config
from mpp_proxy.state.base import Payment, Totals


def _decimals(config: Config, method_name: str) -> int | None:
    try:
        return config.method(method_name).decimals
    except KeyError:
        return None  # a method since removed from the config: show base units


def display_amount(config: Config, method_name: str, base_units: int | str) -> str:
    decimals = _decimals(config, method_name)
    try:
        units = int(base_units)
    except ValueError:
        return str(base_units)
    if decimals is None:
        return f"{units} base units"
    return format(Decimal(units).scaleb(-decimals).normalize(), "f")


def display_currency(config: Config, method_name: str, currency: str) -> str:
    try:
        return method_currency(config.method(method_name))
    except KeyError:
        return currency


def _table(rows: list[list[str]], headers: list[str]) -> list[str]:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    return [fmt.format(*headers).rstrip(), *(fmt.format(*r).rstrip() for r in rows)]


def render_ledger(config: Config, payments: list[Payment], totals: list[Totals]) -> str:
    lines = [f"revenue (delivered payments) from {config.proxy.state.split('://', 1)[0]} state"]
    if totals:
        rows = [
            [
                t.service,
                t.route,
                t.method,
                display_currency(config, t.method, t.currency),
                str(t.count),
                display_amount(config, t.method, t.amount),
            ]
            for t in totals
        ]
        lines.extend(
            "  " + line
            for line in _table(rows, ["service", "route", "method", "currency", "count", "amount"])
        )
        grand: dict[str, Decimal] = {}
        for t in totals:
            currency = display_currency(config, t.method, t.currency)
            decimals = _decimals(config, t.method) or 0
            grand[currency] = grand.get(currency, Decimal(0)) + Decimal(t.amount).scaleb(-decimals)
        total_text = ", ".join(f"{format(v.normalize(), 'f')} {k}" for k, v in grand.items())
        lines.append(f"  total: {total_text}")
    else:
        lines.append("  no delivered payments yet")

    lines.append("")
    lines.append(f"latest payments ({len(payments)})")
    if payments:
        rows = [
            [
                datetime.fromtimestamp(p.created_at, UTC).strftime("%Y-%m-%d %H:%M:%S"),
                p.status.value,
                p.service,
                p.route,
                p.method,
                f"{display_amount(config, p.method, p.amount)} "
                f"{display_currency(config, p.method, p.currency)}",
                p.reference or "-",
            ]
            for p in payments
        ]
        lines.extend(
            "  " + line
            for line in _table(
                rows, ["created (UTC)", "status", "service", "route", "method", "amount", "ref"]
            )
        )
    else:
        lines.append("  none")
    return "\n".join(lines) + "\n"


async def _read(config: Config, limit: int) -> tuple[list[Payment], list[Totals]]:
    from mpp_proxy.state import open_store

    store: Any = open_store(config.proxy.state)
    await store.open()
    try:
        payments = await store.list_payments(limit=limit)
        totals = await store.totals()
    finally:
        await store.close()
    return list(payments), list(totals)


def ledger(path: str, *, limit: int) -> int:
    config = load(path)
    if config.proxy.state.startswith("memory:"):
        print("memory:// state lives inside the serving process: there is no ledger to read here.")
        return 0
    check_store(config, path)
    payments, totals = asyncio.run(_read(config, limit))
    sys.stdout.write(render_ledger(config, payments, totals))
    return 0
