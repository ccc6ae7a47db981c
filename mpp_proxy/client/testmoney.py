"""The paying half of test money: credentials for challenges of the proxy's `kind = "test"`.

Test money is play money: a proxy honours it only with `allow_test_payments = true`, nothing
settles and receipts say so. It lets a client, a demo or a test pay a local gateway offline.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

from mpp import Challenge, Credential
from mpp.methods import Method
from mpp.runtime import ClientMethod, CredentialParams
from pydantic import BaseModel, ConfigDict

__all__ = ["METHOD_NAME", "TEST_PAYER", "client_method", "credential_for", "pay_challenge"]

METHOD_NAME = "test"
TEST_PAYER = "did:mpp-proxy:test-money"


class _Request(BaseModel):
    """A test-money challenge's request, as the server sends it (read, never built here)."""

    model_config = ConfigDict(extra="allow")

    amount: str
    currency: str = "TEST"


class _Payload(BaseModel):
    """What a test-money credential carries: who says they paid, a nonce, optionally how much."""

    model_config = ConfigDict(extra="forbid")

    type: str = "test-money"
    payer: str = TEST_PAYER
    nonce: str = ""
    amount: str | None = None


_definition: Method[_Request, _Payload] = Method(
    name=METHOD_NAME, intent="charge", request_model=_Request, payload_model=_Payload
)


def credential_for(challenge: Challenge, payer: str = TEST_PAYER, amount: str | None = None) -> str:
    """The `Authorization` value paying one test-money challenge.

    `amount` (base units) makes the credential claim that much instead of what is asked.
    """
    payload: dict[str, Any] = {"type": "test-money", "payer": payer, "nonce": secrets.token_hex(8)}
    if amount is not None:
        payload["amount"] = amount
    return Credential(
        challenge=challenge.to_echo(), payload=payload, source=payer
    ).to_authorization()


def client_method(payer: str = TEST_PAYER, *, amount: str | None = None) -> ClientMethod:
    """A pympp client method paying test-money challenges (`mpp_proxy.client.test_money()`)."""

    async def create_credential(params: CredentialParams) -> str:
        return credential_for(params.challenge, payer, amount)

    return ClientMethod(method=_definition, create_credential=create_credential)


def pay_challenge(
    www_authenticate: str | Iterable[str], payer: str = TEST_PAYER, *, amount: str | None = None
) -> str:
    """The `Authorization` value paying the test-money challenge among these header values.

    Raises ValueError when none of them is a test-money challenge.
    """
    from mpp_proxy.client.offers import parse_offers

    values = [www_authenticate] if isinstance(www_authenticate, str) else list(www_authenticate)
    for offer in parse_offers(values):
        if offer.key == f"{METHOD_NAME}/charge":
            return credential_for(offer.challenge, payer, amount)
    raise ValueError("no test-money challenge among these WWW-Authenticate values")
