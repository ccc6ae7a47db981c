"""Reading MPP headers for people: challenges and receipts decoded into labelled lines."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from mpp_proxy.discovery.prices import token_symbol

# Challenges carry base units only; these are the display decimals when the offer does not say.
_DEFAULT_DECIMALS = {"tempo": 6, "evm": 6, "stripe": 2, "test": 6}


def b64url_json(text: str) -> Any:
    """Decode base64url (padding optional) JSON; raises ValueError when it is not that."""
    raw = text.strip()
    try:
        data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        return orjson.loads(data)
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"not base64url JSON: {exc}") from exc


def split_challenges(values: list[str]) -> list[str]:
    """Each `Payment ...` challenge from WWW-Authenticate values (one header may hold several)."""
    from mpp.client.transport import _payment_challenges  # pympp's own splitter, quote-aware

    found: list[str] = []
    for value in values:
        found.extend(_payment_challenges(value))
    return found


@dataclass(frozen=True, slots=True)
class Offer:
    """One parsed challenge, with its price in display units when it can be worked out."""

    challenge: Any  # mpp.Challenge
    amount: Decimal | None
    currency: str

    @property
    def method(self) -> str:
        return str(self.challenge.method)

    @property
    def price(self) -> str:
        if self.amount is None:
            return f"? {self.currency}"
        return f"{format(self.amount.normalize(), 'f')} {self.currency}"


# Methods `pay` spends real money with, and the decimals of every token they transfer (TIP-20
# tokens have 6). A server may advertise fewer (a price reads larger: safe) but never more, or
# `amount` base units would read as a fraction of the price and slip under --max-amount.
_REAL_MONEY_DECIMALS = {"tempo": 6}


def decimals_for(method: str, request: dict[str, Any]) -> int:
    advertised: int | None = None
    details = request.get("methodDetails")
    for source in (request, details if isinstance(details, dict) else {}):
        value = source.get("decimals")
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 36:
            advertised = value
            break
    ceiling = _REAL_MONEY_DECIMALS.get(method)
    if advertised is None:
        return _DEFAULT_DECIMALS.get(method, 0)
    return advertised if ceiling is None else min(advertised, ceiling)


def parse_offers(www_authenticate: list[str]) -> list[Offer]:
    from mpp import Challenge

    offers: list[Offer] = []
    for text in split_challenges(www_authenticate):
        try:
            challenge = Challenge.from_www_authenticate(text)
        except Exception:
            continue  # not ours to pay; the caller reports "no challenge it can pay"
        request = challenge.request if isinstance(challenge.request, dict) else {}
        currency = token_symbol(str(request.get("currency", "")))
        if challenge.method == "stripe":
            currency = currency.upper()
        amount: Decimal | None
        try:
            base = int(str(request.get("amount")))
            amount = Decimal(base).scaleb(-decimals_for(challenge.method, request))
        except ValueError:
            amount = None
        offers.append(Offer(challenge, amount, currency))
    return offers


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
