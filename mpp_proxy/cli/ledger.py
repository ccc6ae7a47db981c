"""`mpp-proxy ledger`: the payments in the state store, filtered, with revenue and totals per
day, as tables, JSON or CSV; and the shared opening of the store for `credits`."""

from __future__ import annotations

import asyncio
import csv
import io
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import orjson

from mpp_proxy.cli.failure import EXIT_CONFIG, Failure
from mpp_proxy.cli.redact import public_url
from mpp_proxy.cli.report import currency_decimals, format_days, format_payments, format_totals
from mpp_proxy.cli.serve import check_store, load
from mpp_proxy.config.model import Config
from mpp_proxy.state import Payment, PaymentStatus, Store
from mpp_proxy.state.codec import sum_delivered
from mpp_proxy.state.query import (
    LedgerQuery,
    daily_totals,
    parse_since,
    payment_document,
    read_ledger,
)

T = TypeVar("T")

# CSV columns, in order: what an accountant's spreadsheet needs first.
CSV_COLUMNS = (
    "created_at_iso", "status", "service", "route", "method", "kind", "amount", "display",
    "currency", "reference", "payer", "attempts", "credit_until_iso", "note", "key",
    "challenge_id", "scope", "created_at", "updated_at",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class LedgerArgs:
    """The command line of `mpp-proxy ledger`."""

    since: str | None = None
    service: str | None = None
    route: str | None = None
    status: str | None = None
    limit: int | None = None
    output: str = "text"  # text | json | csv


def query_from(args: LedgerArgs) -> LedgerQuery:
    try:
        since = None if args.since is None else parse_since(args.since)
    except ValueError as exc:
        raise Failure(f"--since: {exc}", exit_code=EXIT_CONFIG) from None
    try:
        status = None if args.status is None else PaymentStatus(args.status)
    except ValueError:
        shown = ", ".join(s.value for s in PaymentStatus)
        raise Failure(
            f"--status {args.status!r} is not a status",
            f"use one of {shown}",
            exit_code=EXIT_CONFIG,
        ) from None
    route = " ".join(args.route.split()) if args.route else None
    return LedgerQuery(since=since, service=args.service, route=route, status=status)


def with_store(path: str, use: Callable[[Config, Store], Awaitable[T]]) -> T:
    """Load the config at `path`, open its store (a clear line when it cannot), run `use`."""
    from mpp_proxy.state import open_store

    config = load(path)
    if config.proxy.state.startswith("memory:"):
        raise Failure(
            "memory:// state lives inside the serving process: there is no ledger to read",
            'use state = "sqlite:///mpp-proxy-state.db" (or redis://) to keep one',
        )
    check_store(config, path)

    async def run() -> T:
        store = open_store(config.proxy.state)
        await store.open()
        try:
            return await use(config, store)
        finally:
            await store.close()

    return asyncio.run(run())


def render_text(config: Config, rows: list[Payment], limit: int) -> str:
    decimals = currency_decimals(config.methods)
    delivered = [r for r in rows if r.status is PaymentStatus.DELIVERED]
    totals = sum_delivered((r.service, r.route, r.method, r.currency, r.amount) for r in delivered)
    shown = rows[:limit]
    return (
        f"ledger of {public_url(config.proxy.state)}\n\n"
        "revenue (delivered payments)\n"
        + format_totals(totals, decimals=decimals)
        + "\nrevenue per day (UTC)\n"
        + format_days(daily_totals(rows), decimals=decimals)
        + f"\nlatest payments ({len(shown)} of {len(rows)}, newest first)\n"
        + format_payments(shown, decimals=decimals)
    )


def render_json(config: Config, rows: list[Payment]) -> str:
    decimals = currency_decimals(config.methods)
    days = [
        {"day": d.day, "currency": d.currency, "count": d.count, "amount": str(d.amount)}
        for d in daily_totals(rows)
    ]
    doc = {
        "state": public_url(config.proxy.state),
        "payments": [payment_document(p, decimals) for p in rows],
        "days": days,
    }
    return orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n"


def render_csv(config: Config, rows: list[Payment]) -> str:
    decimals = currency_decimals(config.methods)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for p in rows:
        doc = payment_document(p, decimals)
        writer.writerow(["" if doc[c] is None else doc[c] for c in CSV_COLUMNS])
    return out.getvalue()


NO_LEDGER = (
    "memory:// state lives inside the serving process: there is no ledger to read. "
    'Use state = "sqlite:///mpp-proxy-state.db" (or redis://) to keep one.'
)


def in_memory(path: str) -> bool:
    """The config keeps its state in the serving process (says so on stdout)."""
    if load(path).proxy.state.startswith("memory:"):
        print(NO_LEDGER)
        return True
    return False


def ledger(path: str, args: LedgerArgs) -> int:
    query = query_from(args)
    if in_memory(path):
        return 0

    async def read(config: Config, store: Store) -> tuple[Config, list[Payment]]:
        return config, await read_ledger(store, query)

    config, rows = with_store(path, read)
    if args.output == "json":
        sys.stdout.write(render_json(config, rows[: args.limit] if args.limit else rows))
    elif args.output == "csv":
        sys.stdout.write(render_csv(config, rows[: args.limit] if args.limit else rows))
    else:
        sys.stdout.write(render_text(config, rows, args.limit or 20))
    return 0
