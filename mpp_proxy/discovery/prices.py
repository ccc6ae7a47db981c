"""Prices as agents read them: exact base-unit amounts, display amounts and currency labels."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from mpp_proxy.config.checks import base_units
from mpp_proxy.config.model import (
    Config,
    EvmMethod,
    PaymentMethod,
    Route,
    StripeMethod,
    TempoMethod,
    TestMoneyMethod,
)

# Well-known token contracts (lower-case address -> symbol), so llms.txt can say "0.05 USDC"
# instead of a 42-character address. Unknown tokens are shown by address.
_TOKEN_SYMBOLS = {
    # Tempo TIP-20 tokens (same addresses on mainnet and Moderato).
    "0x20c0000000000000000000000000000000000000": "pathUSD",
    "0x20c000000000000000000000b9537d11c60e8b50": "USDC",
    "0x20c0000000000000000000006a37da5c996874be": "OUSD",
    # EVM USDC deployments pympp knows.
    "0x833589fcd6edb6e08f4c7c32d4f71b54bda02913": "USDC",  # Base
    "0x036cbd53842c5426634e7929541ec2318f3dcf7e": "USDC",  # Base Sepolia
    "0xceba9300f2b948710d2653dd7b07f33a8b32118c": "USDC",  # Celo
    "0x48065fbbe25f71c9282ddf5e1cd6d6a887483d5e": "USDT",  # Celo
}


def display_amount(amount: Decimal, decimals: int) -> str:
    """The price for people: cents stay padded ("2.00", "0.10"), finer units lose trailing zeros
    ("0.05", "2") so a 6-decimal token does not read "0.050000"."""
    whole, fraction = divmod(base_units(amount, decimals), 10**decimals)
    if decimals == 0:
        return str(whole)
    text = f"{whole}.{fraction:0{decimals}d}"
    return text.rstrip("0").rstrip(".") if decimals > 2 else text


def token_symbol(currency: str) -> str:
    """A well-known token's symbol ("USDC"), else `currency` as given."""
    return _TOKEN_SYMBOLS.get(currency.lower(), currency)


def currency_label(method: PaymentMethod) -> str:
    """What an amount is counted in, for people: "USDC", "USD", "TEST" or the token address."""
    if isinstance(method, StripeMethod):
        return method.currency.upper()
    if isinstance(method, TestMoneyMethod):
        return method.currency
    return token_symbol(method.currency)


def public_details(method: PaymentMethod) -> dict[str, str | int | list[str]]:
    """The method's public facts: where the money goes and on which network, never a key or URL."""
    details: dict[str, str | int | list[str]] = {}
    if isinstance(method, TempoMethod | EvmMethod):
        details["recipient"] = method.recipient
        details["chainId"] = method.chain_id
    elif isinstance(method, StripeMethod):
        details["networkId"] = method.network_id
        details["paymentMethodTypes"] = list(method.payment_method_types)
    return details


@dataclass(frozen=True, slots=True)
class Offer:
    """One way to pay for a route: a named method and the price in its currency."""

    method: PaymentMethod
    amount: Decimal

    @property
    def base_amount(self) -> str:
        return str(base_units(self.amount, self.method.decimals))

    @property
    def price(self) -> str:
        return display_amount(self.amount, self.method.decimals)

    @property
    def display(self) -> str:
        """ "0.05 USDC (tempo)" """
        return f"{self.price} {currency_label(self.method)} ({self.method.kind})"


def offers(config: Config, route: Route) -> tuple[Offer, ...]:
    """The offers of a paid route in `pay_with` order; () for a free route.

    An empty `pay_with` means every method (the loaders fill it in; a hand-built config may not).
    """
    if route.price is None:
        return ()
    names = route.price.pay_with or tuple(m.name for m in config.methods)
    return tuple(Offer(config.method(name), route.price.amount) for name in names)
