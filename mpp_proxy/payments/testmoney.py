"""Test money, the server side: a pympp payment method that honours every valid credential.

Nothing settles and nothing is worth anything: receipts and references say so (`test_<hex>`).
The gate only builds it when the config sets `allow_test_payments = true`. The paying side is
`mpp_proxy.client.testmoney` (`client_method`, `pay_challenge`).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, model_serializer, model_validator

from mpp_proxy.payments.pympp import (
    CredentialReplayedError,
    Method,
    PaymentInsufficientError,
    Receipt,
    ServerMethod,
    ValidateContext,
    Validation,
    VerifyContext,
    parse_units,
)
from mpp_proxy.payments.pympp import PymppStore as Store

__all__ = [
    "METHOD_NAME",
    "TEST_PAYER",
    "definition",
    "server_method",
]

METHOD_NAME = "test"
TEST_PAYER = "did:mpp-proxy:test-money"
_NOTE = "test money: nothing was paid"
_CLAIM_PREFIX = "mpp-proxy:test-money:"


class TestChargeInput(BaseModel):
    """Route input: a display-unit `amount`, the play currency and its decimals."""

    __test__ = False
    model_config = ConfigDict(extra="forbid")

    amount: str
    currency: str = "TEST"
    decimals: int = 2

    @model_validator(mode="after")
    def _check(self) -> TestChargeInput:
        parse_units(self.amount, self.decimals)
        return self

    @model_serializer
    def _wire(self) -> dict[str, Any]:
        return {
            "amount": str(parse_units(self.amount, self.decimals)),
            "currency": self.currency,
            "methodDetails": {"decimals": self.decimals, "testMoney": True},
        }


class TestPayload(BaseModel):
    """Credential payload: who says they paid (free text) and a client nonce."""

    __test__ = False
    model_config = ConfigDict(extra="forbid")

    type: str = "test-money"
    payer: str = TEST_PAYER
    nonce: str = ""
    # Base units the payer says it paid; less than the challenge asks is refused (402).
    amount: str | None = None


definition: Method[TestChargeInput, TestPayload] = Method(
    name=METHOD_NAME, intent="charge", request_model=TestChargeInput, payload_model=TestPayload
)


def server_method(*, currency: str = "TEST", decimals: int = 2, store: Store) -> ServerMethod:
    """The server side: every authentic credential pays, once per challenge.

    The claim is keyed by challenge id alone: any second settlement of a challenge is a replay
    (403), whatever credential carries it. (Settling the same payload again idempotently would
    let a re-encoded copy of a delivered credential, a new ledger key, be delivered twice.)
    `validate` checks without claiming, so the payment can settle after the upstream answered.
    """

    async def validate(context: ValidateContext) -> Validation:
        echo = context.credential.challenge
        payload = context.credential.payload
        asked = int(context.challenge.request.get("amount", "0"))
        offered = getattr(payload, "amount", None)
        if offered is not None and (not offered.isdigit() or int(offered) < asked):
            raise PaymentInsufficientError(f"paid {offered} of {asked} base units")
        if await store.get(_CLAIM_PREFIX + echo.id) is not None:
            raise CredentialReplayedError("this test-money challenge was already paid")
        payer = str(getattr(payload, "payer", "")) or None
        return Validation(
            credential=context.credential,
            details={"mode": "test"},
            intent="charge",
            request=dict(context.request),
            payer=payer,
        )

    async def broadcast(context: VerifyContext) -> Receipt:
        echo = context.credential.challenge
        reference = "test_" + secrets.token_hex(12)
        if not await store.put_if_absent(_CLAIM_PREFIX + echo.id, reference):
            raise CredentialReplayedError("this test-money challenge was already paid")
        return Receipt(
            status="success",
            timestamp=datetime.now(UTC),
            reference=reference,
            method=METHOD_NAME,
            extra={"note": _NOTE},
        )

    return ServerMethod(
        method=definition,
        validate=validate,
        broadcast=broadcast,
        defaults={"currency": currency, "decimals": decimals},
    )
