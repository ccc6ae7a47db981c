"""What a paid call left behind: the decoded Payment-Receipt and the record of the payment."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from mpp_proxy.client.offers import b64url_json

__all__ = ["PaidCall", "Receipt", "decode_receipt"]


@dataclass(frozen=True, slots=True)
class Receipt:
    """A `Payment-Receipt` header, decoded: `reference` is the transaction hash, `pi_...`, ..."""

    status: str
    method: str
    reference: str
    timestamp: str
    raw: dict[str, Any] = field(default_factory=dict, compare=False)


def decode_receipt(header: str | None) -> Receipt | None:
    """The receipt in a `Payment-Receipt` value; None when absent or unreadable."""
    if not header:
        return None
    try:
        doc = b64url_json(header)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    return Receipt(
        status=str(doc.get("status", "")),
        method=str(doc.get("method", "")),
        reference=str(doc.get("reference", "")),
        timestamp=str(doc.get("timestamp", "")),
        raw=doc,
    )


@dataclass(frozen=True, slots=True)
class PaidCall:
    """One payment this client made (or a credit it redeemed) and what the server answered.

    `receipt` is None when the server did not deliver: then the payment is usually kept as a
    credit, and `credential` redeems it (the transport does so itself when the same request is
    sent again).
    """

    method: str  # the HTTP method of the call
    url: str
    payment_method: str  # "tempo", "test", ...
    amount: Decimal | None  # display units; 0 for a redeemed credit
    currency: str
    status: int  # the status of the paid response
    receipt: Receipt | None
    credential: str
    redeemed: bool = False  # a credit presented again, not a new payment

    @property
    def price(self) -> str:
        """What was paid, for people: "0.01 USDC" (a redeemed credit: "0 USDC")."""
        amount = self.amount if self.amount is not None else Decimal(0)
        return f"{format(amount.normalize(), 'f')} {self.currency}"
