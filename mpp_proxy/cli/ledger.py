"""`mpp-proxy ledger`: revenue totals and recent payments read from the configured state store."""

from __future__ import annotations

import asyncio
import sys

from mpp_proxy.cli.redact import public_url
from mpp_proxy.cli.report import currency_decimals, format_payments, format_totals
from mpp_proxy.cli.serve import check_store, load
from mpp_proxy.config.model import Config
from mpp_proxy.state.base import Payment, Totals


def render_ledger(config: Config, payments: list[Payment], totals: list[Totals]) -> str:
    decimals = currency_decimals(config.methods)
    return (
        f"ledger of {public_url(config.proxy.state)}\n\n"
        "revenue (delivered payments)\n"
        + format_totals(totals, decimals=decimals)
        + f"\nlatest payments ({len(payments)}, newest first)\n"
        + format_payments(payments, decimals=decimals)
    )


async def _read(config: Config, limit: int) -> tuple[list[Payment], list[Totals]]:
    from mpp_proxy.state import open_store

    store = open_store(config.proxy.state)
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
        print(
            "memory:// state lives inside the serving process: there is no ledger to read. "
            'Use state = "sqlite:///mpp-proxy-state.db" (or redis://) to keep one.'
        )
        return 0
    check_store(config, path)
    payments, totals = asyncio.run(_read(config, limit))
    sys.stdout.write(render_ledger(config, payments, totals))
    return 0
