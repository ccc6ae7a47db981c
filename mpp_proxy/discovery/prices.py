"""Prices as agents read them: exact base-unit amounts, display amounts and currency labels."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from mpp_proxy.config.checks import base_units
from mpp_proxy.config.model import (
    Config,
    EvmMethod,
    PaymentMethod,
    PriceRule,
    Route,
    StripeMethod,
    TempoMethod,
    TestMoneyMethod,
)
from mpp_proxy.tokens import token_symbol


def display_amount(amount: Decimal, decimals: int) -> str:
    """The price for people: cents stay padded ("2.00", "0.10"), finer units lose trailing zeros
    ("0.05", "2") so a 6-decimal token does not read "0.050000"."""
    whole, fraction = divmod(base_units(amount, decimals), 10**decimals)
    if decimals == 0:
        return str(whole)
    text = f"{whole}.{fraction:0{decimals}d}"
    return text.rstrip("0").rstrip(".") if decimals > 2 else text


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
    """One way to pay for a route: a named method and the price in its currency.

    A price read from the request has a `rule`; `amount` is then its lowest price point and
    `maximum` its highest.
    """

    method: PaymentMethod
    amount: Decimal
    rule: PriceRule | None = None

    @property
    def maximum(self) -> Decimal:
        return self.rule.amounts[-1] if self.rule is not None else self.amount

    @property
    def base_amount(self) -> str:
        return str(base_units(self.amount, self.method.decimals))

    @property
    def amount_hint(self) -> str:
        """The range of base-unit amounts a price read from the request spans: "1000-50000"."""
        top = base_units(self.maximum, self.method.decimals)
        return f"{self.base_amount}-{top}"

    @property
    def price(self) -> str:
        return display_amount(self.amount, self.method.decimals)

    def shown(self, amount: Decimal) -> str:
        return display_amount(amount, self.method.decimals)

    @property
    def display(self) -> str:
        """ "0.05 USDC (tempo)", or "0.005 to 0.05 USDC (tempo)" for a price from the request"""
        price = self.price
        if self.rule is not None and self.maximum != self.amount:
            price = f"{price} to {self.shown(self.maximum)}"
        return f"{price} {currency_label(self.method)} ({self.method.kind})"

    def points(self) -> list[str]:
        """The rule's price points for people: `"gpt-4o" 0.05`, `up to 1000: 0.01`, ..."""
        rule = self.rule
        if rule is None:
            return []
        out = [f"`{name}`: {self.shown(amount)}" for name, amount in rule.table]
        out += [f"up to {tier.upto}: {self.shown(tier.amount)}" for tier in rule.tiers]
        if rule.default is not None:
            out.append(f"{'any other' if rule.table else 'above'}: {self.shown(rule.default)}")
        return out


def offers(config: Config, route: Route) -> tuple[Offer, ...]:
    """The offers of a paid route in `pay_with` order; () for a free route.

    An empty `pay_with` means every method (the loaders fill it in; a hand-built config may not).
    """
    if route.price is None:
        return ()
    names = route.price.pay_with or tuple(m.name for m in config.methods)
    price = route.price
    return tuple(Offer(config.method(name), price.amount, price.rule) for name in names)


def source_text(rule: PriceRule) -> str:
    """Where a price is read from, for people: "the JSON body's `model`"."""
    if rule.source == "size":
        return "the request body's size in bytes"
    field = rule.body_field
    if field is not None:
        return f"the JSON body's `{field}`"
    return f"the query parameter `{rule.source[6:]}`"
