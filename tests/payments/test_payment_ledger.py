"""The ledger's state machine on its own: the transition table and the known-credential rules."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from mpp_proxy.payments.ledger import (
    TRANSITIONS,
    Event,
    Ledger,
    Presented,
    Update,
    presented,
    sources,
    target,
)
from mpp_proxy.state import Payment, PaymentStatus, open_store

IN_FLIGHT, DELIVERED, CREDITED, FORFEITED = (
    PaymentStatus.IN_FLIGHT,
    PaymentStatus.DELIVERED,
    PaymentStatus.CREDITED,
    PaymentStatus.FORFEITED,
)
NOW = 1_000_000.0
SCOPE = "GET /api/v1/forecast/x"


def row(status: PaymentStatus, **kw: object) -> Payment:
    base = Payment(
        key="k",
        challenge_id="c",
        method="play",
        kind="test",
        reference="test_1",
        amount="5",
        currency="TEST",
        service="api",
        route="GET /v1/forecast/:city",
        scope=SCOPE,
        payer="",
        status=status,
        owner="me",
        lease_until=NOW + 10,
        credit_until=0.0,
        attempts=1,
        created_at=NOW,
        updated_at=NOW,
    )
    return replace(base, **kw)  # type: ignore[arg-type]


def test_final_states_have_no_way_out() -> None:
    assert not [event for (state, event) in TRANSITIONS if state in (DELIVERED, FORFEITED)]


def test_each_event_starts_from_and_ends_in_the_states_the_table_names() -> None:
    assert sources(Event.DELIVER) == (IN_FLIGHT,) and target(Event.DELIVER) is DELIVERED
    assert sources(Event.REDEEM) == (CREDITED,) and target(Event.REDEEM) is IN_FLIGHT
    assert sources(Event.FORFEIT) == (CREDITED,) and target(Event.FORFEIT) is FORFEITED
    assert target(Event.TAKE_OVER) is IN_FLIGHT and target(Event.SETTLED) is IN_FLIGHT


@pytest.mark.parametrize(
    ("payment", "unrecorded", "verdict"),
    [
        (row(DELIVERED), False, Presented.USED),
        (row(FORFEITED), False, Presented.FORFEITED),
        (row(IN_FLIGHT), False, Presented.BUSY),
        (
            row(IN_FLIGHT, lease_until=NOW - 1, scope="GET /api/other"),
            False,
            Presented.OTHER_REQUEST,
        ),
        (row(CREDITED, credit_until=NOW + 60), True, Presented.BUSY),
        (row(CREDITED, credit_until=NOW - 1), False, Presented.FORFEIT),
        (row(CREDITED, credit_until=NOW + 60), False, Presented.REDEEM),
        (row(IN_FLIGHT, lease_until=NOW - 1), False, Presented.TAKE_OVER),
    ],
    ids=[
        "delivered",
        "forfeited",
        "held by a live request",
        "bought for another request",
        "last outcome not yet recorded",
        "credit expired",
        "credit",
        "holder died",
    ],
)
def test_a_known_credential_is_decided_from_its_row(
    payment: Payment, unrecorded: bool, verdict: Presented
) -> None:
    assert presented(payment, now=NOW, request=SCOPE, unrecorded=unrecorded) is verdict


def test_holder_events_only_move_rows_this_process_holds() -> None:
    async def main() -> None:
        store = open_store("memory://")
        await store.open()
        mine = Ledger(store, owner="me", lease_seconds=30, credit_ttl=60)
        other = Ledger(store, owner="other", lease_seconds=30, credit_ttl=60)
        await store.insert_payment(row(IN_FLIGHT))
        assert await other.apply("k", Event.DELIVER) is None
        credited = await mine.apply("k", Event.CREDIT, Update(credit_until=NOW + 60))
        assert credited is not None and credited.status is CREDITED
        # Anyone may redeem a credit (it names its new holder), nobody may deliver it.
        assert await other.apply("k", Event.DELIVER) is None
        held = await other.apply("k", Event.REDEEM, Update(owner="other", credit_until=0.0))
        assert held is not None and held.owner == "other" and held.credit_until == 0.0
        await store.close()

    asyncio.run(main())
