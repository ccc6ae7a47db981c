"""What the pay stage hands on: an Authorization that settles (when it settles after the
upstream answered) and ends as delivered, or as not delivered: released, credited or refunded."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mpp_proxy.payments import refusals
from mpp_proxy.payments.idempotency import Replay
from mpp_proxy.payments.ledger import Event, Ledger, Update
from mpp_proxy.payments.pympp import Credential, Receipt
from mpp_proxy.payments.refusals import Scrubber
from mpp_proxy.payments.settlement import Pending, Spawn
from mpp_proxy.payments.x402 import response_header
from mpp_proxy.problems import Problem
from mpp_proxy.state.base import Payment

Headers = tuple[tuple[bytes, bytes], ...]
# A delivered response as kept for retries: status, headers, body (None: too large to keep).
Response = tuple[int, Headers, bytes | None]
# (settled reference, idempotency key) -> the refund's id; raises when Stripe refused.
Refunder = Callable[[str, str], Awaitable[str]]

log = logging.getLogger("mpp_proxy.payments")


@dataclass(frozen=True, slots=True)
class NotDelivered:
    """Why a paid request was not delivered, as the forwarding side decided it."""

    reason: str  # "upstream-timeout", "upstream-status", "client-disconnected", ...
    status: int  # what the client is answered with
    upstream_status: int | None = None  # the upstream's own status when it answered
    upstream_body: bytes = b""  # the start of its answer, shown when it is short text


class Authorization:
    """A paid request may proceed. `settle()` (once the upstream answered with success), then
    exactly one of `delivered()` / `undelivered()` must follow."""

    __slots__ = (
        "_credit_ttl",
        "_done",
        "_ledger",
        "_refund",
        "_scrub",
        "_spawn",
        "_x402",
        "payment",
        "pending",
        "receipt_headers",
        "redeemed",
        "replay",
    )

    def __init__(
        self,
        ledger: Ledger,
        payment: Payment,
        receipt: Receipt | None,
        *,
        redeemed: bool,
        credit_ttl: float,
        scrub: Scrubber,
        pending: Pending | None = None,
        refund: Refunder | None = None,
        spawn: Spawn | None = None,
        replay: Replay | None = None,
        x402: Credential | None = None,
    ) -> None:
        self._ledger = ledger
        self._credit_ttl = credit_ttl
        self._scrub = scrub
        self._refund = refund
        self._spawn = spawn
        self._done = False
        self._x402 = x402  # paid with x402: the receipt also goes out as PAYMENT-RESPONSE
        self.payment = payment
        # True when this request spends an earlier credit instead of a new payment.
        self.redeemed = redeemed
        # Set while the payment waits to be settled after the upstream's success head.
        self.pending = pending
        self.receipt_headers: Headers = () if receipt is None else receipt_headers(receipt, x402)
        # Set when the request carries an Idempotency-Key: the response is kept for retries.
        self.replay = replay

    @property
    def reference(self) -> str:
        return self.payment.reference

    @property
    def settled(self) -> bool:
        return self.pending is None

    async def settle(self) -> Problem | None:
        """Settle a payment that waited for the upstream's success head: None when it settled
        (the receipt headers are then set), else the answer to send instead of the upstream's.

        Settling is not cancelled with the request: a payment that settles after the client
        left is kept as a credit.
        """
        pending = self.pending
        if pending is None:
            return None
        task = asyncio.ensure_future(pending.settle(self.payment))
        try:
            outcome = await asyncio.shield(task)
        except asyncio.CancelledError:
            self._done = True
            if self._spawn is not None:
                self._spawn(self._credit_when_settled(task))
            raise
        if isinstance(outcome, Problem):
            self._done = True
            return outcome
        self.payment, receipt = outcome
        self.pending = None
        self.receipt_headers = receipt_headers(receipt, self._x402)
        return None

    async def _credit_when_settled(
        self, task: asyncio.Future[tuple[Payment, Receipt] | Problem]
    ) -> None:
        outcome = await task
        if isinstance(outcome, tuple):
            payment, _ = outcome
            until = time.time() + self._credit_ttl
            await self._ledger.finish(payment.key, Event.CREDIT, Update(credit_until=until))

    async def delivered(self, response: Response | None = None) -> None:
        """The upstream answered with success and the whole body reached the client;
        `response` (status, headers, body or None when too large) is kept for retries."""
        if self._done:
            return
        self._done = True
        if response is not None and self.replay is not None:
            try:
                await self.replay.keep(*response)
            except Exception as exc:
                log.warning("keeping a response for retries failed (%s)", type(exc).__name__)
        await self._ledger.finish(self.payment.key, Event.DELIVER)

    async def undelivered(self, why: NotDelivered) -> Problem:
        """Not delivered: released when nothing was charged yet, else refunded or kept as a
        credit; the problem tells the client what it can do."""
        pending = self.pending
        if pending is not None:
            if not self._done:
                self._done = True
                await pending.release(self.payment)
            return refusals.not_charged(
                reason=why.reason,
                status=why.status,
                upstream_status=why.upstream_status,
                upstream_body=why.upstream_body,
                valid_until=pending.until,
                scrub=self._scrub,
            )
        if self._refund is not None and not self._done:
            refunded = await self._refunded(why)
            if refunded is not None:
                return refunded
        return await self._credit(why)

    async def _credit(self, why: NotDelivered) -> Problem:
        until = time.time() + self._credit_ttl
        if not self._done:
            self._done = True
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

    async def _refunded(self, why: NotDelivered) -> Problem | None:
        """Give the payment back; None (it is kept as a credit instead) when that failed."""
        assert self._refund is not None
        refund = await _refund_once(self._refund, self.payment)
        if refund is None:
            return None
        self._done = True
        await self._ledger.finish(self.payment.key, Event.REFUND, Update(refund=refund))
        return refusals.refunded(
            self.payment,
            refund,
            reason=why.reason,
            status=why.status,
            upstream_status=why.upstream_status,
            upstream_body=why.upstream_body,
            scrub=self._scrub,
        )


# A refund that failed in transit is asked for again with the same idempotency key: the
# payment provider answers the first refund again instead of making a second.
_REFUND_ATTEMPTS = 2


async def _refund_once(refunder: Refunder, payment: Payment) -> str | None:
    for attempt in range(_REFUND_ATTEMPTS):
        try:
            return await refunder(payment.reference, payment.key)
        except Exception as exc:
            log.warning(
                "refunding %s failed (%s)%s",
                payment.reference,
                type(exc).__name__,
                "; retrying" if attempt + 1 < _REFUND_ATTEMPTS else "; kept as a credit",
            )
    return None


def receipt_headers(receipt: Receipt, x402_credential: Credential | None = None) -> Headers:
    headers: Headers = (
        (b"payment-receipt", receipt.to_payment_receipt().encode("ascii")),
        (b"cache-control", b"private"),
    )
    if x402_credential is not None:
        paid = response_header(x402_credential, receipt)
        if paid is not None:
            headers = (*headers, paid)
    return headers
