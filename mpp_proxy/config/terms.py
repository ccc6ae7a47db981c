"""Payment terms beyond a fixed price: prices computed from the request, settlement timing and
what a settled but undelivered payment becomes. Raw values in, model values or ConfigError out."""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation

from mpp_proxy.config.checks import check_keys, closest, parse_price
from mpp_proxy.config.errors import ConfigError
from mpp_proxy.config.model import (
    ON_FAILURE,
    PRICE_SOURCES,
    SETTLE_TIMINGS,
    PaymentMethod,
    PriceRule,
    PriceTier,
    Route,
    StripeMethod,
)

RULE_KEYS = ("from", "table", "tiers", "default")
TIER_KEYS = ("upto", "price")
# A JSON field path (dotted) or a query parameter name: printable, no spaces.
_FIELD = re.compile(r"[A-Za-z0-9_$-]+(\.[A-Za-z0-9_$-]+)*")
_QUERY_NAME = re.compile(r"[!$'()*+,\-.0-9;:@A-Z_a-z~]+")


def parse_rule(value: Mapping[str, object]) -> PriceRule:
    """`{ from = "json:model", table = {..}, default = ".." }` or `{ from = .., tiers = [..] }`."""
    check_keys(value, RULE_KEYS, "a price rule", prefix="price.")
    source = _source(value.get("from"))
    table, tiers = value.get("table"), value.get("tiers")
    if (table is None) == (tiers is None):
        raise ConfigError(
            "a price rule has either table = { value = price, .. } or tiers = [{ upto = n, price "
            "= .. }, ..]",
            key="price",
        )
    rule = PriceRule(
        source=source,
        table=_table(table) if table is not None else (),
        tiers=_tiers(tiers) if tiers is not None else (),
        default=_default(value.get("default")),
    )
    if rule.table and source == "size":
        raise ConfigError(
            "the body size is a number: price it with tiers, not a table", key="price.table"
        )
    return rule


def _default(value: object) -> Decimal | None:
    if value is None:
        return None
    try:
        return parse_price(value)
    except ConfigError as exc:
        raise ConfigError(exc.problem, key="price.default") from None


def _source(value: object) -> str:
    if not isinstance(value, str):
        raise ConfigError(
            f"a price rule needs from = one of {', '.join(PRICE_SOURCES)}", key="price.from"
        )
    kind, sep, name = value.partition(":")
    if value == "size":
        return value
    if sep and kind == "json" and _FIELD.fullmatch(name):
        return value
    if sep and kind == "query" and _QUERY_NAME.fullmatch(name):
        return value
    if kind in ("json", "query"):
        raise ConfigError(
            f"{value!r} names no valid {'field' if kind == 'json' else 'parameter'}: write "
            f"{kind}:name"
            + (" (a dotted path such as json:options.model)" if kind == "json" else ""),
            key="price.from",
        )
    raise ConfigError(
        f"unknown price source {value!r}{closest(kind, ('json', 'query', 'size'))}; "
        f"one of {', '.join(PRICE_SOURCES)}",
        key="price.from",
    )


def _table(value: object) -> tuple[tuple[str, Decimal], ...]:
    if not isinstance(value, Mapping) or not value:
        raise ConfigError("must be a non-empty table of value = price", key="price.table")
    out = []
    for name, price in value.items():
        try:
            out.append((str(name), parse_price(price)))
        except ConfigError as exc:
            raise ConfigError(exc.problem, key=f"price.table.{name}") from None
    return tuple(out)


def _tiers(value: object) -> tuple[PriceTier, ...]:
    if isinstance(value, str | bytes) or not isinstance(value, list | tuple) or not value:
        raise ConfigError(
            "must be a non-empty list of { upto = n, price = .. }, in increasing order",
            key="price.tiers",
        )
    tiers: list[PriceTier] = []
    for i, tier in enumerate(value):
        key = f"price.tiers[{i}]"
        if not isinstance(tier, Mapping):
            raise ConfigError("must be a table { upto = n, price = .. }", key=key)
        check_keys(tier, TIER_KEYS, "a price tier", prefix=f"{key}.")
        if "upto" not in tier or "price" not in tier:
            raise ConfigError("a tier needs upto and price", key=key)
        upto = _number(tier["upto"], f"{key}.upto")
        try:
            amount = parse_price(tier["price"])
        except ConfigError as exc:
            raise ConfigError(exc.problem, key=f"{key}.price") from None
        if tiers and upto <= tiers[-1].upto:
            raise ConfigError(
                f"tiers are out of order or overlap: upto {upto} follows upto {tiers[-1].upto}; "
                "list them with increasing upto",
                key=f"{key}.upto",
            )
        tiers.append(PriceTier(upto, amount))
    return tuple(tiers)


def _number(value: object, key: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ConfigError("must be a number", key=key)
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise ConfigError(f"{value!r} is not a number", key=key) from None
    if not number.is_finite():
        raise ConfigError("must be a finite number", key=key)
    return number


# ------------------------------------------------------------------------------ settlement


def check_choice(value: object, choices: tuple[str, ...], key: str) -> str:
    """One of `choices` ("after" / "before", "credit" / "refund")."""
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(
            f"must be one of {', '.join(repr(c) for c in choices)}, not {value!r}", key=key
        )
    return value


def can_settle_after(method: PaymentMethod) -> bool:
    """Whether the method can check a credential without settling it (Stripe cannot)."""
    return not isinstance(method, StripeMethod)


def can_refund(method: PaymentMethod) -> bool:
    return isinstance(method, StripeMethod)


def settle_timing(route: Route, method: PaymentMethod) -> str:
    """When a payment for `route` with `method` settles: "after" or "before"."""
    if route.settle is not None:
        return route.settle
    if method.settlement is not None:
        return method.settlement
    return "after" if can_settle_after(method) else "before"


def refunds(route: Route, method: PaymentMethod) -> bool:
    """Whether an undelivered payment settled before forwarding is refunded (not credited)."""
    if route.on_failure is not None:
        return route.on_failure == "refund"
    return isinstance(method, StripeMethod) and method.on_failure == "refund"


def check_method_terms(method: PaymentMethod) -> None:
    """The method's own settlement keys: Stripe cannot settle after."""
    if method.settlement is not None:
        check_choice(method.settlement, SETTLE_TIMINGS, "settlement")
        if method.settlement == "after" and not can_settle_after(method):
            raise ConfigError(_NO_VALIDATE.format(name=method.name), key="settlement")
    if isinstance(method, StripeMethod):
        check_choice(method.on_failure, ON_FAILURE, "on_failure")


def check_route_terms(route: Route, methods: Mapping[str, PaymentMethod]) -> None:
    """A route's settle / on_failure against the methods it is paid with."""
    assert route.price is not None
    used = [methods[name] for name in route.price.pay_with if name in methods]
    if route.settle is not None:
        check_choice(route.settle, SETTLE_TIMINGS, "settle")
        if route.settle == "after":
            for method in used:
                if not can_settle_after(method):
                    raise ConfigError(_NO_VALIDATE.format(name=method.name), key="settle")
    if route.on_failure is not None:
        check_choice(route.on_failure, ON_FAILURE, "on_failure")
        if route.on_failure == "refund":
            for method in used:
                if not can_refund(method):
                    raise ConfigError(
                        f'on_failure = "refund" needs a method that can refund; {method.kind} '
                        f'method {method.name!r} cannot (only stripe refunds); use "credit"',
                        key="on_failure",
                    )


_NO_VALIDATE = (
    "stripe method {name!r} cannot settle after the upstream answered: a shared payment token "
    'is charged when it is checked; use settle = "before" (with on_failure = "refund" to give '
    "the money back when the upstream fails)"
)
