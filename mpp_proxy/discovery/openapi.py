"""The OpenAPI 3.1 document: every route, its price as MPP `x-payment-info` offers, nothing secret.

`x-payment-info` follows draft-payment-discovery-01 exactly (its offer schema allows only intent,
method, amount, currency and description), so registries that validate it accept us. What an agent
needs beyond that (decimals, recipient, chain, the display price) goes in `x-mpp-offers`, a list
parallel to `offers`.
"""

from __future__ import annotations

import re
from typing import Any

from mpp_proxy.config.model import Config, Route, Service
from mpp_proxy.discovery import limits
from mpp_proxy.discovery.prices import (
    Offer,
    currency_label,
    offers,
    public_details,
    source_text,
)
from mpp_proxy.discovery.templates import Placement, Segment, place_routes

OPENAPI_VERSION = "3.1.0"
PAYING = (
    "Paid operations answer `402 Payment Required` with one `WWW-Authenticate: Payment` challenge "
    "per accepted method (HTTP Payment authentication, the Machine Payments Protocol). Pay one, "
    "repeat the request with `Authorization: Payment <credential>` and the response carries "
    "`Payment-Receipt`. If the upstream fails after payment, the same credential may be retried on "
    "the same route. The 402 challenge is authoritative; `x-payment-info` is advisory."
)
_BODY_METHODS = frozenset({"post", "put", "patch"})
_NOT_IN_ID = re.compile(r"[^A-Za-z0-9_]+")


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _problem_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": _ref("schemas", "Problem")}},
    }


def _components() -> dict[str, Any]:
    return {
        "schemas": _schemas(),
        "headers": _headers(),
        "responses": {**_payment_responses(), **_failure_responses()},
    }


def _schemas() -> dict[str, Any]:
    return {
        "Problem": {
            "type": "object",
            "description": "RFC 9457 problem details.",
            "required": ["type", "title", "status"],
            "properties": {
                "type": {"type": "string", "format": "uri-reference"},
                "title": {"type": "string"},
                "status": {"type": "integer", "minimum": 100, "maximum": 599},
                "detail": {"type": "string"},
                "instance": {"type": "string"},
            },
            "additionalProperties": True,
        }
    }


def _headers() -> dict[str, Any]:
    return {
        "WWW-Authenticate": {
            "description": "One `Payment` challenge per accepted method (id, realm, method, "
            "intent, request, expires); order them with `Accept-Payment`.",
            "required": True,
            "schema": {"type": "string"},
        },
        "Payment-Receipt": {
            "description": "Base64url JSON receipt (status, method, timestamp, reference) of "
            "the payment this response delivered.",
            "schema": {"type": "string"},
        },
        "Cache-Control": {"schema": {"type": "string"}},
        "Retry-After": {
            "description": "Seconds to wait before repeating the request.",
            "schema": {"type": "integer", "minimum": 0},
        },
        "RateLimit-Policy": {
            "description": 'The route\'s quota policies: `"name";q=<requests>;w=<seconds>` '
            "(draft-ietf-httpapi-ratelimit-headers).",
            "schema": {"type": "string"},
        },
        "RateLimit": {
            "description": 'What remains of each policy: `"name";r=<requests>;t=<seconds>`.',
            "schema": {"type": "string"},
        },
    }


def _payment_responses() -> dict[str, Any]:
    """The upstream's answers passed on, and the gateway's own about payment and limits."""
    return {
        "Upstream": {"description": "The upstream's response, passed through unchanged."},
        "Delivered": {
            "description": "The upstream's response, passed through; the payment is kept and "
            "`Payment-Receipt` says so.",
            "headers": {"Payment-Receipt": _ref("headers", "Payment-Receipt")},
        },
        "PaymentRequired": {
            "description": "Payment required, or the credential was expired, tampered, for "
            "another route or did not verify: pay one of the challenges.",
            "headers": {
                "WWW-Authenticate": _ref("headers", "WWW-Authenticate"),
                "Cache-Control": _ref("headers", "Cache-Control"),
            },
            "content": {"application/problem+json": {"schema": _ref("schemas", "Problem")}},
        },
        "BadRequest": _problem_response(
            "Unsafe path, or a credential for a payment method this route does not accept."
        ),
        "CredentialUsed": _problem_response(
            "This credential was already used, or its credit expired."
        ),
        "PaymentInProgress": _problem_response(
            "Another request is using this credential right now: retry shortly."
        ),
        "Credited": _problem_response(
            "The upstream answered this error status after payment. The payment is kept as "
            "a credit: retry with the same credential before the time the body gives."
        ),
        "PayloadTooLarge": _problem_response("The request body is over the route's limit."),
        "TooManyRequests": {
            **_problem_response(
                "Over a rate limit or a spend cap (`x-rate-limit`, `x-spend-limit`), decided "
                "before payment: nothing was charged and a credential sent with it is still "
                "good. Retry after `Retry-After`."
            ),
            "headers": {
                "Retry-After": _ref("headers", "Retry-After"),
                "RateLimit": _ref("headers", "RateLimit"),
                "RateLimit-Policy": _ref("headers", "RateLimit-Policy"),
            },
        },
    }


def _failure_responses() -> dict[str, Any]:
    """The gateway's own answers when a backend, the upstream or capacity failed."""
    return {
        "PaymentError": _problem_response(
            "The payment backend failed; the payment may have landed. Do not pay again: "
            "retry later with the same credential, which is never charged twice."
        ),
        "BadGateway": _problem_response(
            "The upstream could not be reached or failed. A payment made for this request is "
            "kept as a credit: retry with the same credential."
        ),
        "Unavailable": {
            **_problem_response(
                "Over capacity, shedding load from a slow upstream, or a store the gateway "
                "needs is down, decided before payment: retry after `Retry-After`."
            ),
            "headers": {"Retry-After": _ref("headers", "Retry-After")},
        },
        "GatewayTimeout": _problem_response(
            "The upstream timed out. A payment made for this request is kept as a credit: "
            "retry with the same credential."
        ),
    }


# Answers the gateway itself may give on any operation, before or instead of the upstream's;
# 429 and 503 only where a limit or a capacity rule can give them.
_GATEWAY_RESPONSES = {
    "400": "BadRequest",
    "413": "PayloadTooLarge",
    "502": "BadGateway",
    "504": "GatewayTimeout",
}
_PAYMENT_RESPONSES = {
    "402": "PaymentRequired",
    "403": "CredentialUsed",
    "409": "PaymentInProgress",
    "500": "PaymentError",
}


def _responses(config: Config, service: Service, route: Route) -> dict[str, Any]:
    refs = dict(_GATEWAY_RESPONSES)
    if limits.can_limit(service, route):
        refs["429"] = "TooManyRequests"
    if limits.can_be_unavailable(config, service, route):
        refs["503"] = "Unavailable"
    if route.price is None:
        refs["default"] = "Upstream"
    else:
        refs.update(_PAYMENT_RESPONSES)
        # Upstream statuses below deliver_below reach the client with a receipt; the others
        # come back as the same status with a credit problem instead of the upstream's body.
        for status_class in range(2, 6):
            delivered = status_class * 100 < route.deliver_below
            refs[f"{status_class}XX"] = "Delivered" if delivered else "Credited"
    return {status: _ref("responses", name) for status, name in sorted(refs.items())}


def _parameter(segment: Segment) -> dict[str, Any]:
    if segment.kind == "tail":
        return {
            "name": segment.text,
            "in": "path",
            "required": True,
            "description": "The rest of the path, forwarded as is. It may span several segments: "
            "send its `/` unescaped (OpenAPI path parameters cannot say so; `x-mpp-tail` does).",
            "schema": {"type": "string", "minLength": 1},
            "x-mpp-tail": True,
        }
    return {
        "name": segment.text,
        "in": "path",
        "required": True,
        "description": "One path segment.",
        "schema": {"type": "string", "minLength": 1, "pattern": "^[^/]+$"},
    }


def _offer(offer: Offer) -> dict[str, Any]:
    """An MPP discovery offer; a price read from the request has `amount` null and its range
    of base-unit amounts in `amountHint`."""
    doc: dict[str, Any] = {
        "intent": "charge",
        "method": offer.method.kind,
        "amount": None if offer.rule is not None else offer.base_amount,
        "currency": offer.method.currency,
        "description": offer.display,
    }
    if offer.rule is not None:
        doc["amountHint"] = offer.amount_hint
    return doc


def _offer_details(offer: Offer) -> dict[str, Any]:
    method = offer.method
    doc: dict[str, Any] = {
        "name": method.name,
        "intent": "charge",
        "method": method.kind,
        "amount": offer.base_amount,
        "price": offer.price,
        "currency": method.currency,
        "currencyLabel": currency_label(method),
        "decimals": method.decimals,
        **public_details(method),
    }
    if offer.rule is not None:
        doc["amount"] = None
        doc["price"] = None
        doc["pricing"] = _pricing(offer)
    return doc


def _pricing(offer: Offer) -> dict[str, Any]:
    """A price read from the request, in display units: where from, and its table or tiers."""
    rule = offer.rule
    assert rule is not None
    doc: dict[str, Any] = {
        "from": rule.source,
        "minPrice": offer.price,
        "maxPrice": offer.shown(offer.maximum),
    }
    if rule.table:
        doc["table"] = {name: offer.shown(amount) for name, amount in rule.table}
    if rule.tiers:
        doc["tiers"] = [
            {"upto": str(tier.upto), "price": offer.shown(tier.amount)} for tier in rule.tiers
        ]
    if rule.default is not None:
        doc["default"] = offer.shown(rule.default)
    return doc


def _operation_id(placement: Placement, service: Service, taken: set[str]) -> str:
    words = [service.id, placement.method]
    for part in placement.template.split("/")[2:]:
        words.append(part.strip("{}") or "root")
    base = _NOT_IN_ID.sub("_", "_".join(w for w in words if w)).strip("_") or "operation"
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}_{n}"
    taken.add(candidate)
    return candidate


def _operation(config: Config, service: Service, placement: Placement, op_id: str) -> Any:
    route = placement.route
    shown = f"{placement.method.upper()} /{service.id}{route.pattern}"
    operation: dict[str, Any] = {
        "operationId": op_id,
        "tags": [service.id],
        "summary": _one_line(route.description) or shown,
    }
    route_offers = offers(config, route)
    if route_offers:
        price = " or ".join(o.display for o in route_offers)
        operation["description"] = f"Price per call: {price}."
        rule = route_offers[0].rule
        if rule is not None:
            operation["description"] += f" The price is read from {source_text(rule)}."
    else:
        operation["description"] = "Free: forwarded to the upstream without payment."
    if placement.parameters:
        operation["parameters"] = [_parameter(s) for s in placement.parameters]
    if placement.method in _BODY_METHODS:
        operation["requestBody"] = {
            "required": False,
            "description": "Forwarded to the upstream unchanged.",
            "content": {"application/json": {"schema": {}}},
        }
    operation["responses"] = _responses(config, service, route)
    if route_offers:
        operation["x-payment-info"] = {"offers": [_offer(o) for o in route_offers]}
        operation["x-mpp-offers"] = [_offer_details(o) for o in route_offers]
    rate_limits = limits.rate_documents(service, route)
    if rate_limits:
        operation["x-rate-limit"] = rate_limits
    spend_limits = limits.spend_documents(config, service, route)
    if spend_limits:
        operation["x-spend-limit"] = spend_limits
    return operation


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _link(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + path


def openapi_document(
    config: Config, *, version: str = "unversioned", base_url: str = ""
) -> dict[str, Any]:
    """The OpenAPI 3.1.0 document for `config`, as plain JSON-ready data.

    `version` is the document's `info.version` (the serving proxy passes its own).
    `base_url` is where the proxy is reachable ("https://api.example.com", or "/prefix" when it is
    mounted under a path); it becomes `servers` and the prefix of the documentation links. Left
    empty, links are absolute paths ("/llms.txt") and clients use the document's own origin.
    """
    info: dict[str, Any] = {"title": config.proxy.title or "mpp-proxy", "version": version}
    info["description"] = (
        f"{config.proxy.description.strip()}\n\n{PAYING}"
        if config.proxy.description.strip()
        else PAYING
    )
    service_info: dict[str, Any] = {}
    if config.proxy.categories:
        service_info["categories"] = list(config.proxy.categories)
    service_info["docs"] = {
        "llms": _link(base_url, "/llms.txt"),
        "apiReference": _link(base_url, "/openapi.json"),
    }
    tags: list[dict[str, Any]] = []
    paths: dict[str, dict[str, Any]] = {}
    taken: set[str] = set()
    for service in config.services:
        tag: dict[str, Any] = {"name": service.id}
        about = ": ".join(p for p in (service.title, _one_line(service.description)) if p)
        if about:
            tag["description"] = about
        tags.append(tag)
        for placement in place_routes(service):
            op_id = _operation_id(placement, service, taken)
            item = paths.setdefault(placement.template, {})
            item[placement.method] = _operation(config, service, placement, op_id)
    document: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": info,
        "x-service-info": service_info,
    }
    if base_url:
        document["servers"] = [{"url": base_url.rstrip("/") or "/"}]
    document["tags"] = tags
    document["paths"] = paths
    document["components"] = _components()
    return document
