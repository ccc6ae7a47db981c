"""Offers: which challenges one paid route makes, resolved once at load and minted per 402."""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from pydantic import ValidationError

from mpp_proxy.config.errors import ConfigError
from mpp_proxy.config.model import PriceRule, Route, Service
from mpp_proxy.config.terms import refunds, settle_timing
from mpp_proxy.payments.accept import rank
from mpp_proxy.payments.challenges import ChallengeMint, Expiry, scope_json
from mpp_proxy.payments.methods import BuiltMethod, Refunder
from mpp_proxy.payments.prices import price_for
from mpp_proxy.payments.pympp import (
    RequestContext,
    body_digest,
    tempo_route_rules,
    transform_units,
)
from mpp_proxy.payments.refusals import payment_required
from mpp_proxy.problems import Problem

Headers = tuple[tuple[bytes, bytes], ...]
OfferKey = tuple[str, str]  # (wire method name, intent), as a credential echoes them


@dataclass(frozen=True, slots=True)
class Offer:
    """One method offered on one route: pympp's resolved input, the wire request, its mint."""

    built: BuiltMethod
    input: dict[str, Any]  # resolved route input (what pympp hands to verify as `request`)
    wire: dict[str, Any]  # the challenge request without `_mppx_scope`
    mint: ChallengeMint
    amount: str  # base units
    # Validated when presented, settled once the upstream answered with success.
    settle_after: bool = False
    # Gives a payment settled before forwarding back when the request is not delivered.
    refund: Refunder | None = None

    @property
    def key(self) -> OfferKey:
        return (self.built.wire_name, self.built.intent)


@dataclass(frozen=True, slots=True)
class RouteOffers:
    """Everything static about one paid route's payment terms."""

    route: Route
    service_id: str
    route_key: str  # "POST /v1/chat/completions", as configured
    what: str  # how 402 bodies name the route
    price: str  # display units, "0.05"
    offers: tuple[Offer, ...]
    keys: tuple[OfferKey, ...]
    by_key: Mapping[OfferKey, tuple[Offer, ...]]
    expiry: Expiry
    required: Problem  # the static part of the plain 402 (challenges are added per request)
    # A price computed from the request: the offers of each price it can charge.
    rule: PriceRule | None = None
    by_price: Mapping[Decimal, RouteOffers] = field(default_factory=dict)

    def acceptable(self, accept: str | None) -> tuple[int, ...]:
        """Offer indexes in the order the client prefers; empty when it accepts none."""
        return rank(self.keys, accept)

    def challenges(
        self, order: tuple[int, ...], scope: dict[str, str], digest: str | None = None
    ) -> Headers:
        """One fresh `WWW-Authenticate` header per offer in `order`, bound to the request scope
        (and to the body, by its digest, when the price was read from it)."""
        encoded = scope_json(scope)
        expires = self.expiry.now()
        offers = self.offers
        return tuple(
            (
                b"www-authenticate",
                offers[i].mint.issue(encoded, expires, digest or "").encode("latin-1"),
            )
            for i in order
        )

    @property
    def x402(self) -> bool:
        """x402 clients can pay this route (an evm offer)."""
        return any(o.built.server.x402 is not None for o in self.offers)

    @property
    def reads_body(self) -> bool:
        """The price is read from the body's JSON: the body is read whole and bound."""
        return self.rule is not None and self.rule.body_field is not None

    def priced(
        self, *, body: bytes, query: str, size: int
    ) -> tuple[RouteOffers, str | None] | Problem:
        """The offers at this request's price and the body digest they bind; a 400 problem
        when the price cannot be read from the request."""
        rule = self.rule
        if rule is None:
            return self, None
        amount = price_for(rule, body=body, query=query, size=size)
        if isinstance(amount, Problem):
            return amount
        return self.by_price[amount], (body_digest(body) if self.reads_body else None)

    def offered(self) -> list[str]:
        """`name/intent` of each distinct offer, for refusals that list what is accepted."""
        return [f"{name}/{intent}" for name, intent in dict.fromkeys(self.keys)]


def display(amount: Decimal) -> str:
    return format(amount, "f")


def route_offers(
    service: Service,
    route: Route,
    methods: Mapping[str, BuiltMethod],
    *,
    secret: str,
    realm: str,
    expiry: Expiry,
) -> RouteOffers:
    """Resolve a paid route's offers; ConfigError when a method cannot charge the price."""
    price = route.price
    assert price is not None
    rule = price.rule
    if rule is None:
        return _fixed(service, route, price.amount, methods, secret, realm, expiry)
    by_price = {
        amount: _fixed(service, route, amount, methods, secret, realm, expiry)
        for amount in rule.amounts
    }
    return replace(by_price[price.amount], rule=rule, by_price=by_price)


def _fixed(
    service: Service,
    route: Route,
    amount: Decimal,
    methods: Mapping[str, BuiltMethod],
    secret: str,
    realm: str,
    expiry: Expiry,
) -> RouteOffers:
    """The offers of one price of a route."""
    assert route.price is not None
    offers = [
        _offer(service, route, amount, name, methods, secret, realm, expiry)
        for name in route.price.pay_with
    ]
    by_key: dict[OfferKey, tuple[Offer, ...]] = {}
    for offer in offers:
        by_key[offer.key] = (*by_key.get(offer.key, ()), offer)
    what = route.description or f"{route.method} /{service.id}{route.pattern}"
    return RouteOffers(
        route=route,
        service_id=service.id,
        route_key=route.key,
        what=what,
        price=display(amount),
        offers=tuple(offers),
        keys=tuple(o.key for o in offers),
        by_key=by_key,
        expiry=expiry,
        required=payment_required(what, display(amount)),
    )


def _offer(
    service: Service,
    route: Route,
    amount: Decimal,
    name: str,
    methods: Mapping[str, BuiltMethod],
    secret: str,
    realm: str,
    expiry: Expiry,
) -> Offer:
    """One method's offer at one price of a route."""
    where = f"route {route.key!r} of service {service.id!r}"
    built = methods.get(name)
    if built is None:
        raise ConfigError(f"{where} is paid with unknown method {name!r}")
    options: dict[str, Any] = {"amount": display(amount), **built.route_options}
    try:
        resolved, wire = resolve(built, options, expiry.ttl)
    except (ValueError, TypeError, ValidationError) as exc:
        raise ConfigError(
            f"{where}: price {display(amount)} cannot be charged with {name!r}: {first_line(exc)}"
        ) from None
    mint = ChallengeMint(
        secret_key=secret,
        realm=realm,
        method=built.wire_name,
        intent=built.intent,
        wire=wire,
        description=route.description or None,
    )
    after = settle_timing(route, built.config) == "after" and built.server.validate is not None
    return Offer(
        built,
        resolved,
        wire,
        mint,
        str(wire.get("amount", "")),
        settle_after=after,
        refund=built.refund if refunds(route, built.config) else None,
    )


def resolve(
    built: BuiltMethod, options: dict[str, Any], challenge_ttl: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """pympp's offer preparation (compose._prepare_offer) without a request: input and wire."""
    method = built.server
    data = {**(method.defaults or {}), **{k: v for k, v in options.items() if v is not None}}
    if method.resolve_request is not None:
        resolved = method.resolve_request(RequestContext(request=data))
        if isinstance(resolved, Awaitable):
            raise TypeError("asynchronous resolve_request is not supported")
        data = resolved
    wire = transform_units(method.method.normalize_request(data))
    if built.wire_name == "tempo":
        min_validity, reject_fixed_memos = tempo_route_rules()
        reject_fixed_memos(wire)
        details = wire.get("methodDetails")
        if isinstance(details, dict) and details.get("feePayer") and challenge_ttl < min_validity:
            raise ValueError(
                f"sponsored (fee payer) charges need challenge_ttl >= {min_validity:g} s"
            )
    return data, wire


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
