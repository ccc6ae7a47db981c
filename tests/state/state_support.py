"""Shared by the state tests: a ledger row factory and the `run_store` fixture's type."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from mpp_proxy.state import Payment, PaymentStatus, Store

RunStore = Callable[[Callable[[Store], Awaitable[Any]]], Any]

IN_FLIGHT = PaymentStatus.IN_FLIGHT
DELIVERED = PaymentStatus.DELIVERED
CREDITED = PaymentStatus.CREDITED
FORFEITED = PaymentStatus.FORFEITED


def payment(key: str, **overrides: Any) -> Payment:
    base = Payment(
        key=key,
        challenge_id=f"ch-{key}",
        method="usdc",
        kind="tempo",
        reference="",
        amount="1000",
        currency="0x20c0",
        service="openai",
        route="POST /v1/chat/completions",
        scope="POST /openai/v1/chat/completions",
        payer="did:pkh:eip155:42431:0xabc",
        status=IN_FLIGHT,
        owner="worker-a",
        lease_until=2000.0,
        credit_until=0.0,
        attempts=1,
        created_at=1000.0,
        updated_at=1000.0,
    )
    return replace(base, **overrides)
