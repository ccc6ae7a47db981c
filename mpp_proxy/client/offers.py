"""Payment challenges read for a payer: each offer with a price never read smaller than it is."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson
from mpp import Challenge

from mpp_proxy.tokens import token_symbol

__all__ = ["Offer", "b64url_json", "decimals_for", "parse_offers", "split_challenges"]

# ISO 4217 currencies without minor units and with three; every other card currency has two.
_ZERO_DECIMAL = frozenset(
    [
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    ]
)
_THREE_DECIMAL = frozenset(["bhd", "jod", "kwd", "omr", "tnd"])
# The most decimals a method's amounts can have. A server may advertise fewer (the price then
# reads larger: safe), never more, or `amount` base units would read as a fraction of the price
# and slip under a spending cap. TIP-20 tokens have 6; EVM stablecoins 6 (an 18-decimal token
# reads a trillion times dearer and is refused, never the other way round).
_CEILING = {"tempo": 6, "evm": 6}


def b64url_json(text: str) -> Any:
    """Decode base64url (padding optional) JSON; raises ValueError when it is not that."""
    raw = text.strip()
    try:
        data = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4))
        return orjson.loads(data)
    except (ValueError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"not base64url JSON: {exc}") from exc


def split_challenges(values: Iterable[str]) -> list[str]:
    """Each `Payment ...` challenge from WWW-Authenticate values (one header may hold several)."""
    from mpp.client.transport import _payment_challenges  # pympp's own splitter, quote-aware

    found: list[str] = []
    for value in values:
        found.extend(_payment_challenges(value))
    return found


def decimals_for(method: str, request: dict[str, Any]) -> int:
    """How many decimals to read a challenge's base-unit amount with, for a cap to compare."""
    if method == "stripe":
        currency = str(request.get("currency", "")).lower()
        return 0 if currency in _ZERO_DECIMAL else 3 if currency in _THREE_DECIMAL else 2
    advertised: int | None = None
    details = request.get("methodDetails")
    for source in (request, details if isinstance(details, dict) else {}):
        value = source.get("decimals")
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 36:
            advertised = value
            break
    ceiling = _CEILING.get(method)
    if advertised is None:
        # Unknown: as many as the method can have, or none at all (base units as whole units).
        return ceiling if ceiling is not None else 6 if method == "test" else 0
    return advertised if ceiling is None else min(advertised, ceiling)


@dataclass(frozen=True, slots=True)
class Offer:
    """One parsed challenge, with its price in display units when it can be worked out."""

    challenge: Challenge
    amount: Decimal | None  # display units; None when the challenge has no integer amount
    currency: str  # as the challenge names it: a token address, "usd", "TEST"
    label: str  # the currency for people: "USDC", "USD", an address when unknown

    @property
    def method(self) -> str:
        return str(self.challenge.method)

    @property
    def key(self) -> str:
        """`method/intent`, as in Accept-Payment."""
        return f"{self.challenge.method}/{self.challenge.intent}"

    @property
    def price(self) -> str:
        if self.amount is None:
            return f"? {self.label}"
        return f"{format(self.amount.normalize(), 'f')} {self.label}"


def parse_offers(
    www_authenticate: Iterable[str], *, label: Callable[[str], str] = token_symbol
) -> list[Offer]:
    """Every Payment challenge in these header values that parses, in the server's order.

    `label` names a currency for people (by default a known token address to its symbol).
    """
    offers: list[Offer] = []
    for text in split_challenges(www_authenticate):
        try:
            challenge = Challenge.from_www_authenticate(text)
        except Exception:
            continue  # not ours to pay; the caller says "no offer it can pay"
        request = challenge.request if isinstance(challenge.request, dict) else {}
        currency = str(request.get("currency", ""))
        shown = currency.upper() if challenge.method == "stripe" else label(currency)
        amount: Decimal | None
        try:
            base = int(str(request.get("amount")))
            amount = Decimal(base).scaleb(-decimals_for(challenge.method, request))
        except ValueError:
            amount = None
        offers.append(Offer(challenge, amount, currency, shown))
    return offers
