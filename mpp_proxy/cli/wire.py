"""Reading MPP headers for people: challenges and receipts decoded into labelled lines."""

from __future__ import annotations

from typing import Any

import orjson

from mpp_proxy.client.offers import Offer, b64url_json, parse_offers

__all__ = ["Offer", "b64url_json", "offer_lines", "parse_offers", "receipt_lines"]


def offer_lines(offer: Offer) -> list[str]:
    c = offer.challenge
    pairs = [
        ("method", f"{c.method}/{c.intent}"),
        ("price", offer.price),
        ("challenge", c.id),
        ("realm", c.realm),
    ]
    if c.expires:
        pairs.append(("expires", c.expires))
    if c.description:
        pairs.append(("description", c.description))
    request = c.request if isinstance(c.request, dict) else {}
    first = [k for k in ("amount", "currency", "recipient") if k in request]
    for key in first + sorted(k for k in request if k not in first):
        unit = " (base units)" if key == "amount" else ""
        pairs.append((f"request.{key}", _scalar(request[key]) + unit))
    width = max(len(name) for name, _ in pairs)
    return [f"{name:<{width}}  {value}" for name, value in pairs]


def receipt_lines(header: str) -> list[str]:
    try:
        doc = b64url_json(header)
    except ValueError as exc:
        return [f"(undecodable receipt: {exc})"]
    if not isinstance(doc, dict):
        return [f"(unexpected receipt: {doc!r})"]
    width = max((len(key) for key in doc), default=0)
    return [f"{key:<{width}}  {_scalar(value)}" for key, value in doc.items()]


def _scalar(value: Any) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()
