"""`mpp-proxy credits list|void KEY`: the open credits, and voiding one (who and why are kept on
its ledger row; a voided credit can no longer be redeemed)."""

from __future__ import annotations

import getpass
import socket
import sys

import orjson

from mpp_proxy.cli.failure import EXIT_CONFIG, Failure
from mpp_proxy.cli.ledger import in_memory, with_store
from mpp_proxy.cli.report import currency_decimals, format_credits
from mpp_proxy.config.model import Config
from mpp_proxy.payments.ledger import void_credit
from mpp_proxy.state import Payment, PaymentStatus, Store
from mpp_proxy.state.query import LedgerQuery, find_payment, payment_document, read_ledger


def operator() -> str:
    """Who runs this command, for the record: user@host."""
    try:
        user = getpass.getuser()
    except OSError:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def credits_list(path: str, *, as_json: bool) -> int:
    if in_memory(path):
        return 0

    async def read(config: Config, store: Store) -> tuple[Config, list[Payment]]:
        return config, await read_ledger(store, LedgerQuery(status=PaymentStatus.CREDITED))

    config, rows = with_store(path, read)
    decimals = currency_decimals(config.methods)
    if as_json:
        doc = {"credits": [payment_document(p, decimals) for p in rows]}
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(f"open credits ({len(rows)}, newest first)\n")
        sys.stdout.write(format_credits(rows, decimals=decimals))
    return 0


def credits_void(path: str, key: str, *, reason: str, by: str | None) -> int:
    if not reason.strip():
        raise Failure("--reason is empty", "say why the credit is voided", exit_code=EXIT_CONFIG)
    who = by or operator()

    async def void(config: Config, store: Store) -> Payment:
        try:
            row = await find_payment(store, key, PaymentStatus.CREDITED)
        except KeyError as missing:
            raise Failure(str(missing.args[0]), "list them with `mpp-proxy credits list`") from None
        voided = await void_credit(store, row.key, by=who, reason=reason.strip())
        if voided is None:
            raise Failure(f"credit {row.key[:12]} was redeemed, forfeited or voided meanwhile")
        return voided

    voided = with_store(path, void)
    print(f"voided credit {voided.key[:12]} ({voided.service} {voided.route}): {voided.note}")
    print("it can no longer be redeemed; the ledger keeps the row and this note")
    return 0
