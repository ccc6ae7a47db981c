"""What the pay stage hands on: an Authorization that ends as delivered or as a credit."""

from __future__ import annotations

import time
from dataclasses import dataclass

from mpp_proxy.payments import refusals
from mpp_proxy.payments.ledger import Event, Ledger, Update
from mpp_proxy.payments.pympp import Receipt
from mpp_proxy.payments.refusals import Scrubber
from mpp_proxy.problems import Problem
from mpp_proxy.state.base import Payment

Headers = tuple[tuple[bytes, bytes], ...]


@dataclass(frozen=True, slots=True)
class NotDelivered:
    """Why a paid request was not delivered, as the forwarding side decided it."""

    reason: str  # "upstream-timeout", "upstream-status", "client-disconnected", ...
    status: int  # what the client is answered with
    upstream_status: int | None = None  # the upstream's own status when it answered
    upstream_body: bytes = b""  # the start of its answer, shown when it is short text


class Authorization:
    """A paid request may proceed. Exactly one of `delivered()` / `credit()` must follow."""

    __slots__ = (
        "_credit_ttl",
        "_done",
        "_ledger",
        "_scrub",
        "outcome",
        "payment",
        "reason",
        "receipt_headers",
        "redeemed",
    )

    def __init__(
        self,
        ledger: Ledger,
        payment: Payment,
        receipt: Receipt,
        *,
        redeemed: bool,
        credit_ttl: float,
        scrub: Scrubber,
    ) -> None:
        self._ledger = ledger
        self._credit_ttl = credit_ttl
        self._scrub = scrub
        self._done = False
        self.payment = payment
        # True when this request spends an earlier credit instead of a new payment.
        self.redeemed = redeemed
        # How it ended, for metrics and webhooks: delivered | redeemed | credited ("" until).
        self.outcome = ""
        self.reason = ""  # why it was not delivered
        self.receipt_headers: Headers = (
            (b"payment-receipt", receipt.to_payment_receipt().encode("ascii")),
            (b"cache-control", b"private"),
        )

    @property
    def reference(self) -> str:
        return self.payment.reference

    async def delivered(self) -> None:
        """The upstream answered with success and the whole body reached the client."""
        if self._done:
            return
        self._done = True
        self.outcome = "redeemed" if self.redeemed else "delivered"
        await self._ledger.finish(self.payment.key, Event.DELIVER)

    async def credit(self, why: NotDelivered) -> Problem:
        """Keep the payment as a credit; the problem tells the client how to redeem it."""
        until = time.time() + self._credit_ttl
        if not self._done:
            self._done = True
            self.outcome, self.reason = "credited", why.reason
            await self._ledger.finish(self.payment.key, Event.CREDIT, Update(credit_until=until))
        return refusals.credited(
            self.payment,
            reason=why.reason,
            status=why.status,
            upstream_status=why.upstream_status,
            upstream_body=why.upstream_body,
            until=until,
            scrub=self._scrub,
        )
