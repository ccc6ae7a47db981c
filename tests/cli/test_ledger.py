"""`mpp-proxy ledger` reads the configured store and prints revenue per service/route/method."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from cli_harness import run_cli

from mpp_proxy.state import Payment, PaymentStatus, open_store

CONFIG = """
[proxy]
secret_key = "{secret}"
state = "sqlite:///state.db"

[methods.usdc]
kind = "tempo"
recipient = "0x1111111111111111111111111111111111111111"
currency = "0x20C000000000000000000000b9537d11c60E8b50"

[services.openai]
base_url = "http://127.0.0.1:9"

[services.openai.routes]
"POST /v1/chat/completions" = {{ price = "0.05", pay_with = ["usdc"] }}
"""


def payment(key: str, status: PaymentStatus) -> Payment:
    now = time.time()
    return Payment(
        key=key, challenge_id=f"ch-{key}", method="usdc", kind="tempo", reference=f"0xref{key}",
        amount="50000", currency="0x20C000000000000000000000b9537d11c60E8b50", service="openai",
        route="POST /v1/chat/completions", scope="POST /openai/v1/chat/completions", payer="",
        status=status, owner="", lease_until=0.0, credit_until=0.0, attempts=1,
        created_at=now, updated_at=now,
    )  # fmt: skip


async def record(url: str) -> None:
    store = open_store(url)
    await store.open()
    try:
        for key in ("a1", "a2"):
            await store.insert_payment(payment(key, PaymentStatus.DELIVERED))
        await store.insert_payment(payment("c3", PaymentStatus.CREDITED))
    finally:
        await store.close()


def test_ledger_prints_totals_and_payments(tmp_path: Path) -> None:
    (tmp_path / "proxy.toml").write_text(CONFIG.format(secret="k" * 40))
    asyncio.run(record(f"sqlite:///{tmp_path}/state.db"))
    result = run_cli("ledger", "--config", "proxy.toml", cwd=tmp_path)
    assert result.code == 0, result.err
    totals, _, payments = result.out.partition("latest payments")
    total_row = next(line for line in totals.splitlines() if line.startswith("openai"))
    assert "POST /v1/chat/completions" in total_row
    assert "usdc" in total_row
    assert total_row.split()[-3:] == ["2", "100000", "0.100000"]
    assert payments.count("0xref") == 3
    assert "credited" in payments


def test_ledger_of_memory_state_explains_there_is_none(tmp_path: Path) -> None:
    text = CONFIG.format(secret="k" * 40).replace("sqlite:///state.db", "memory://")
    (tmp_path / "proxy.toml").write_text(text)
    result = run_cli("ledger", "--config", "proxy.toml", cwd=tmp_path)
    assert result.code == 0
    assert "no ledger" in result.out
