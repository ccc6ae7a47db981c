"""The payment methods a client pays with: test money, Tempo from a private key, any pympp one."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mpp.runtime import ClientMethod

from mpp_proxy.client import testmoney

if TYPE_CHECKING:
    from mpp.methods.tempo import TempoAccount

__all__ = [
    "PRIVATE_KEY_ENV",
    "RPC_URL_ENV",
    "InvalidKey",
    "Wallet",
    "address_of",
    "tempo",
    "test_money",
    "wallet_from_env",
]

# Where `mpp-proxy pay`, the examples and wallet_from_env() look for the payer's key and chain.
PRIVATE_KEY_ENV = "MPP_PRIVATE_KEY"
RPC_URL_ENV = "MPP_RPC_URL"


class InvalidKey(ValueError):
    """A private key that does not parse; the message never contains the key."""


def test_money(payer: str = testmoney.TEST_PAYER) -> ClientMethod:
    """Play money: pays proxies that allow test payments, moves nothing anywhere."""
    return testmoney.client_method(payer)


test_money.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def _account(private_key: str) -> TempoAccount:
    from mpp.methods.tempo import TempoAccount

    try:
        return TempoAccount.from_key(private_key.strip())
    except Exception as exc:
        # Never echo the key, not even a prefix: only say it is malformed.
        raise InvalidKey(f"not a valid private key ({type(exc).__name__})") from None


def address_of(private_key: str) -> str:
    """The account address of a private key (where a faucet or a funder sends money)."""
    return str(_account(private_key).address)


def tempo(
    private_key: str, *, rpc_url: str | None = None, chain_id: int | None = None
) -> ClientMethod:
    """Tempo (TIP-20 transfers) signed with `private_key`.

    `rpc_url` is the chain the key pays on (mainnet by default; the client then pays only
    challenges for the chain that RPC reports); `chain_id` pins a chain explicitly.
    """
    from mpp.methods.tempo import client as tempo_client

    options: dict[str, Any] = {"account": _account(private_key)}
    if rpc_url:
        options["rpc_url"] = rpc_url
    if chain_id is not None:
        options["chain_id"] = chain_id
    return tempo_client.charge(**options)


@dataclass(slots=True)
class Wallet:
    """The methods a client can pay with here, and how to enable the missing ones."""

    methods: list[ClientMethod] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)  # method name -> how to enable it


def wallet_from_env(environ: Mapping[str, str] | None = None) -> Wallet:
    """Test money always; Tempo when $MPP_PRIVATE_KEY is set (on $MPP_RPC_URL's chain if set)."""
    env = os.environ if environ is None else environ
    wallet = Wallet([test_money()])
    key = env.get(PRIVATE_KEY_ENV, "").strip()
    if key:
        wallet.methods.append(tempo(key, rpc_url=env.get(RPC_URL_ENV) or None))
    else:
        wallet.missing["tempo"] = f"set ${PRIVATE_KEY_ENV} to the payer's private key"
    return wallet
