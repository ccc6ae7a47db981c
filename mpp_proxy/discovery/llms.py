"""llms.txt: a Markdown directory of services, routes and prices for agents (llmstxt.org shape)."""

from __future__ import annotations

from mpp_proxy.config.model import (
    ANY_METHOD,
    Config,
    EvmMethod,
    PaymentMethod,
    Route,
    Service,
    StripeMethod,
    TempoMethod,
)
from mpp_proxy.discovery import limits
from mpp_proxy.discovery.prices import currency_label, offers, source_text

HOW_TO_PAY = (
    "1. Call the route. A paid route answers `402 Payment Required` with one "
    "`WWW-Authenticate: Payment ...` challenge per accepted method "
    "(send `Accept-Payment: tempo/charge` to say which you prefer).",
    "2. Pay one challenge with that method and repeat the same request with "
    "`Authorization: Payment <credential>`.",
    "3. The response carries `Payment-Receipt`. If the upstream fails instead, nothing is lost: "
    "retry the same request with the same credential.",
)


LIMITS = (
    "Routes marked with limits answer `429` (over a rate limit or a spend cap) or `503` (over "
    "capacity) before any payment: nothing is charged and a credential sent with it is still "
    "good. Wait `Retry-After` seconds and repeat. Answers carry `RateLimit-Policy` and "
    "`RateLimit` (draft-ietf-httpapi-ratelimit-headers) saying what remains."
)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _method_line(method: PaymentMethod) -> str:
    label = currency_label(method)
    parts = [f"`{method.name}`: {method.kind}, in {label}"]
    if label.lower() != method.currency.lower():
        parts.append(f"currency `{method.currency}`")
    parts.append(f"{method.decimals} decimals")
    if isinstance(method, TempoMethod | EvmMethod):
        parts.append(f"chain {method.chain_id}, paid to `{method.recipient}`")
    elif isinstance(method, StripeMethod):
        parts.append("Stripe shared payment token (" + ", ".join(method.payment_method_types) + ")")
    else:
        parts.append("play money for demos and tests")
    return "- " + ", ".join(parts)


def _route_lines(config: Config, service: Service, route: Route) -> list[str]:
    method = "ANY" if route.method == ANY_METHOD else route.method
    line = f"- `{method} /{service.id}{route.pattern}`: "
    route_offers = offers(config, route)
    line += " or ".join(o.display for o in route_offers) if route_offers else "free"
    description = _one_line(route.description)
    first = f"{line}. {description}" if description else line
    limited = limits.describe(config, service, route)
    if limited:
        first = f"{first} {limited}" if first.endswith(".") else f"{first}. {limited}"
    lines = [first]
    rule = route_offers[0].rule if route_offers else None
    if rule is not None:
        # The price table, once per method (amounts differ only by the currency's decimals).
        for offer in route_offers:
            label = f"{currency_label(offer.method)} ({offer.method.kind})"
            points = "; ".join(offer.points())
            lines.append(f"  - priced by {source_text(rule)}, in {label}: {points}")
    return lines


def _link(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + path


def llms_txt(config: Config, *, base_url: str = "") -> str:
    """The llms.txt text for `config`; `base_url` prefixes links as in `openapi_document`."""
    title = _one_line(config.proxy.title) or "mpp-proxy"
    summary = _one_line(config.proxy.description) or "Pay-per-call access to HTTP APIs."
    openapi = _link(base_url, "/openapi.json")
    lines = [
        f"# {title}",
        "",
        f"> {summary}",
        "",
        "Each route is called at the path shown and forwarded to its upstream API. Paid routes "
        "are paid per call over HTTP 402 with the Machine Payments Protocol (MPP); prices are "
        f"per call. `:name` is one path segment, `*` the rest of the path, `ANY` any method. "
        f"The [OpenAPI document]({openapi}) has every route with its price in base units "
        "(`x-payment-info`).",
        "",
        "## How to pay",
        "",
        *HOW_TO_PAY,
        "",
    ]
    used = {name for s in config.services for r in s.routes for name in _pay_with(config, r)}
    accepted = [m for m in config.methods if m.name in used]
    if accepted:
        lines += ["## Payment methods", "", *(_method_line(m) for m in accepted), ""]
    if limits.any_limits(config):
        lines += ["## Limits", "", LIMITS, ""]
    lines += ["## Services", ""]
    if not config.services:
        lines += ["No services are configured.", ""]
    for service in config.services:
        heading = f"### {service.id}"
        if service.title:
            heading += f": {_one_line(service.title)}"
        lines += [heading, ""]
        if service.description.strip():
            lines += [_one_line(service.description), ""]
        for route in service.routes:
            lines += _route_lines(config, service, route)
        lines.append("")
    lines += [
        "## Docs",
        "",
        f"- [OpenAPI 3.1 document]({openapi}): routes, parameters and payment offers",
        "",
    ]
    return "\n".join(lines)


def _pay_with(config: Config, route: Route) -> tuple[str, ...]:
    return tuple(o.method.name for o in offers(config, route))
