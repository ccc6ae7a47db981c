"""Payment method builders (tempo, stripe, evm, test_money) returning checked model values."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from mpp_proxy.config.checks import (
    check_address,
    check_int,
    check_nonempty,
    check_private_key,
    check_segment,
    check_str_tuple,
    check_url,
    secret,
)
from mpp_proxy.config.errors import ConfigError
from mpp_proxy.config.model import (
    EvmMethod,
    PaymentMethod,
    Secret,
    StripeMethod,
    TempoMethod,
    TestMoneyMethod,
)
from mpp_proxy.config.terms import check_method_terms

__all__ = ["KINDS", "PYTHON_ONLY", "PaymentMethod", "evm", "stripe", "tempo", "test_money"]


def _name(name: str) -> str:
    try:
        return check_segment(name, "method name")
    except ConfigError as exc:
        raise ConfigError(exc.problem, key=f"methods.{name}") from None


@contextmanager
def _in_method(name: str) -> Iterator[None]:
    """Name the method in the key of any error: `methods.usdc.recipient`."""
    try:
        yield
    except ConfigError as exc:
        raise ConfigError(exc.problem, key=f"methods.{name}.{exc.key}") from None


def _decimals(value: int) -> int:
    return check_int(value, "decimals", low=0, high=36)


M = TypeVar("M", TempoMethod, StripeMethod, EvmMethod, TestMoneyMethod)


def _checked(method: M) -> M:
    check_method_terms(method)
    return method


def _optional_url(value: str | None, key: str) -> str | None:
    return None if value is None else check_url(value, key)


def tempo(
    name: str,
    *,
    recipient: str,
    currency: str,
    chain_id: int = 4217,
    rpc_url: str | None = None,
    decimals: int = 6,
    fee_payer_key: str | Secret | None = None,
    settlement: str | None = None,
) -> TempoMethod:
    """Crypto payments on Tempo: a TIP-20 `currency` token sent to `recipient`.

    `settlement`: "after" (the default: a signed transfer is checked, then broadcast once the
    upstream answered with success) or "before".
    """
    name = _name(name)
    with _in_method(name):
        fee_payer = None
        if fee_payer_key is not None:
            fee_payer = check_private_key(secret(fee_payer_key, "fee_payer_key"), "fee_payer_key")
        return _checked(
            TempoMethod(
                name=name,
                recipient=check_address(recipient, "recipient"),
                currency=check_address(currency, "currency"),
                chain_id=check_int(chain_id, "chain_id", low=1),
                rpc_url=_optional_url(rpc_url, "rpc_url"),
                decimals=_decimals(decimals),
                fee_payer_key=fee_payer,
                settlement=settlement,
            )
        )


def stripe(
    name: str,
    *,
    secret_key: str | Secret,
    network_id: str,
    currency: str = "usd",
    decimals: int = 2,
    payment_method_types: Sequence[str] = ("card",),
    api_base: str = "https://api.stripe.com",
    settlement: str | None = None,
    on_failure: str = "credit",
) -> StripeMethod:
    """Card payments through Stripe shared payment tokens, charged before forwarding.

    `on_failure`: what a charged request that was not delivered becomes, "credit" (the same
    credential is served again without paying) or "refund" (through Stripe's Refunds API).
    """
    name = _name(name)
    with _in_method(name):
        key = secret(secret_key, "secret_key")
        if not key.value:
            raise ConfigError("is empty", key="secret_key")
        types = check_str_tuple(payment_method_types, "payment_method_types")
        if not types:
            raise ConfigError("is empty", key="payment_method_types")
        return _checked(
            StripeMethod(
                name=name,
                secret_key=key,
                network_id=check_nonempty(network_id, "network_id"),
                currency=check_nonempty(currency, "currency").lower(),
                decimals=_decimals(decimals),
                payment_method_types=types,
                api_base=check_url(api_base, "api_base").rstrip("/"),
                settlement=settlement,
                on_failure=on_failure,
            )
        )


def evm(
    name: str,
    *,
    currency: str,
    recipient: str,
    chain_id: int,
    facilitator_url: str | None = None,
    decimals: int = 6,
    eip712_name: str | None = None,
    eip712_version: str | None = None,
    settle: Callable[[Any], Any] | None = None,
    settlement: str | None = None,
) -> EvmMethod:
    """EIP-3009 transfer authorizations of the `currency` token on chain `chain_id`.

    `eip712_name`/`eip712_version`: the token's EIP-712 domain, needed (both) for a token pympp
    does not know. `settle` (Python only) settles a verified authorization instead of
    `facilitator_url` and returns its transaction hash. `settlement`: "after" (the default: the
    authorization is checked, then settled once the upstream answered with success) or "before".
    """
    name = _name(name)
    with _in_method(name):
        if settle is not None and not callable(settle):
            raise ConfigError(f"must be a callable, not {type(settle).__name__}", key="settle")
        if settle is None and facilitator_url is None:
            raise ConfigError(
                "is required to settle payments (or, in a proxy.py, pass settle=)",
                key="facilitator_url",
            )
        if (eip712_name is None) != (eip712_version is None):
            missing = "eip712_version" if eip712_version is None else "eip712_name"
            raise ConfigError(
                "eip712_name and eip712_version go together (the token's EIP-712 domain)",
                key=missing,
            )
        return _checked(
            EvmMethod(
                name=name,
                currency=check_address(currency, "currency"),
                recipient=check_address(recipient, "recipient"),
                chain_id=check_int(chain_id, "chain_id", low=1),
                facilitator_url=_optional_url(facilitator_url, "facilitator_url"),
                decimals=_decimals(decimals),
                eip712_name=None
                if eip712_name is None
                else check_nonempty(eip712_name, "eip712_name"),
                eip712_version=(
                    None
                    if eip712_version is None
                    else check_nonempty(eip712_version, "eip712_version")
                ),
                settle=settle,
                settlement=settlement,
            )
        )


def test_money(
    name: str = "test",
    *,
    currency: str = "TEST",
    decimals: int = 6,
    settlement: str | None = None,
) -> TestMoneyMethod:
    """Play money for demos and tests; `serve` refuses it unless `allow_test_payments` is set."""
    name = _name(name)
    with _in_method(name):
        return _checked(
            TestMoneyMethod(
                name=name,
                currency=check_nonempty(currency, "currency"),
                decimals=_decimals(decimals),
                settlement=settlement,
            )
        )


test_money.__test__ = False  # type: ignore[attr-defined]  # not a pytest test

# Builder arguments that only Python can give (a callable); TOML refuses them by name.
PYTHON_ONLY = frozenset({"settle"})

# The `kind` of each method in TOML and the builder that makes it.
KINDS: dict[str, Callable[..., PaymentMethod]] = {
    "tempo": tempo,
    "stripe": stripe,
    "evm": evm,
    "test": test_money,
}
