"""A route's limits as agents read them: which refusals it can give (429, 503) and the limits
themselves, for `x-rate-limit` / `x-spend-limit` in OpenAPI and a line in llms.txt."""

from __future__ import annotations

from typing import Any

from mpp_proxy.config.limits import policy_names
from mpp_proxy.config.model import Config, RateLimit, Route, Service, SpendCap
from mpp_proxy.discovery.prices import currency_label


def rates(service: Service, route: Route) -> list[tuple[RateLimit, str, str]]:
    """(limit, policy name, level) for every rate limit on the route, its own first."""
    levels = [(r, "route") for r in route.limits.rates]
    levels += [(r, "service") for r in service.limits.rates]
    names = policy_names(levels)
    return [(r, n, level) for (r, level), n in zip(levels, names, strict=True)]


def caps(service: Service, route: Route) -> list[tuple[SpendCap, str]]:
    """(cap, level) for the spend caps that count this route's payments."""
    if route.price is None:
        return []
    return [(c, "route") for c in route.limits.spend] + [
        (c, "service") for c in service.limits.spend
    ]


def can_limit(service: Service, route: Route) -> bool:
    """Whether the route can answer 429 (a rate limit or a spend cap applies)."""
    return bool(rates(service, route) or caps(service, route))


def any_limits(config: Config) -> bool:
    """Whether any route can answer 429 or 503 for a limit or a capacity rule."""
    return any(can_limit(s, r) or not s.capacity.empty for s in config.services for r in s.routes)


def can_be_unavailable(config: Config, service: Service, route: Route) -> bool:
    """Whether the gateway itself can answer 503 on the route: a paid route (its connection is
    taken before payment; the payment store may be down), a service with an in-flight cap or
    load shedding, or limits that refuse when their shared store fails."""
    if route.price is not None or not service.capacity.empty:
        return True
    if not can_limit(service, route) or config.proxy.state.startswith("memory:"):
        return False
    mode = route.limits.on_store_error or service.limits.on_store_error or "open"
    return mode == "closed"


def _key(key: str) -> str:
    if key == "route":
        return "all callers together"
    if key.startswith("header:"):
        return f"the {key.partition(':')[2]} header (else the address)"
    if key == "payer":
        return "the payer the credential names (else the address)"
    return "client address"


def rate_documents(service: Service, route: Route) -> list[dict[str, Any]]:
    return [
        {
            "policy": name,
            "rate": limit.rate,
            "quota": limit.count,
            "window": limit.period,
            "burst": limit.burst,
            "key": limit.key,
            "scope": level,
        }
        for limit, name, level in rates(service, route)
    ]


def currency_of(config: Config, cap: SpendCap) -> str:
    """What a cap is counted in, for people ("USDC")."""
    method = next((m for m in config.methods if m.currency == cap.currency), None)
    return currency_label(method) if method is not None else str(cap.currency)


def spend_documents(config: Config, service: Service, route: Route) -> list[dict[str, Any]]:
    return [
        {
            "amount": format(cap.amount, "f"),
            "currency": cap.currency,
            "currencyLabel": currency_of(config, cap),
            "per": cap.per,
            "key": cap.key,
            "scope": level,
        }
        for cap, level in caps(service, route)
    ]


def describe(config: Config, service: Service, route: Route) -> str:
    """One sentence for llms.txt, "" without limits."""
    parts = []
    for limit, _, level in rates(service, route):
        at_once = f", {limit.burst} at once" if limit.burst != limit.count else ""
        where = " (across the service)" if level == "service" else ""
        parts.append(f"{limit.rate} by {_key(limit.key)}{at_once}{where}")
    for cap, level in caps(service, route):
        where = " (across the service)" if level == "service" else ""
        amount = format(cap.amount, "f")
        parts.append(
            f"at most {amount} {currency_of(config, cap)} per {cap.per} by {_key(cap.key)}{where}"
        )
    return "Limits: " + "; ".join(parts) + "." if parts else ""
