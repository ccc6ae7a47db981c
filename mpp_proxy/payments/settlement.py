"""Settling a payment: pympp's validate and settle steps, and recording what they did.

Settled before forwarding, the gate settles while it decides the request. Settled after, the
pay stage only validates; the request carries a `Pending` settlement that the core runs once
the upstream's head is a success, before that head goes out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from mpp_proxy.payments import refusals
from mpp_proxy.payments.credentials import Checked, PaidRequest
from mpp_proxy.payments.ledger import Event, Ledger, Update
from mpp_proxy.payments.pympp import (
    CredentialReplayedError,
    InternalPaymentError,
    PaymentError,
    PaymentOutcomeUnknownError,
    Receipt,
    ValidateContext,
    Validation,
    VerificationError,
    VerificationFailedError,
    VerifyContext,
)
from mpp_proxy.payments.refusals import Scrubber
from mpp_proxy.problems import Problem
from mpp_proxy.state.base import HELD_STATUSES, Payment, Store

log = logging.getLogger("mpp_proxy.payments")

Spawn = Callable[[Coroutine[Any, Any, Any]], None]
# Holds a challenge for the one credential being served with it (settled after, a re-encoded
# copy of a credential is another ledger row: this keeps it from being forwarded meanwhile).
_CHALLENGE_HOLD = "mpp-proxy:challenge:"


def outcome_unknown(exc: BaseException) -> bool:
    """A settlement failure after which the payment may have moved (not a clear refusal)."""
    return not isinstance(exc, PaymentError) or isinstance(
        exc, InternalPaymentError | PaymentOutcomeUnknownError
    )


def cause(exc: BaseException) -> str:
    origin = exc.__cause__
    return type(exc).__name__ + (f" from {type(origin).__name__}" if origin is not None else "")


async def validate(checked: Checked) -> Validation:
    """pympp's non-mutating check of a credential: nothing is settled, reserved or consumed."""
    offer = checked.offer
    hook = offer.built.server.validate
    assert hook is not None  # offers settle after only where the method can validate
    context = ValidateContext(
        credential=checked.credential,
        request=dict(offer.input),
        challenge=checked.challenge,
        operation="validate",
    )
    result: Validation = await hook(context)
    return result


def pushed(validation: Validation) -> bool:
    """The client broadcast the payment itself (Tempo push mode): it is settled already."""
    details = validation.details
    return isinstance(details, dict) and details.get("mode") == "push"


async def settle(checked: Checked, row: Payment) -> Receipt:
    """pympp's settlement; a replay of a payment our dead predecessor settled is found on
    chain (attempts > 1) rather than lost."""
    offer = checked.offer
    context = VerifyContext(
        credential=checked.credential, request=dict(offer.input), challenge=checked.challenge
    )
    try:
        receipt, _ = await offer.built.server.settle(context)
    except CredentialReplayedError:
        found = None
        if row.attempts > 1 and offer.built.recover is not None:
            found = await offer.built.recover(checked.credential, checked.challenge)
        if found is None:
            raise
        receipt = found
    result: Receipt = receipt
    return result


async def record_settled(
    ledger: Ledger, row: Payment, receipt: Receipt, payer: str, credit_ttl: float
) -> Payment | Problem:
    """Write the settled payment's reference into its held row; the held row, or the answer
    when the ledger did not take it (the payment is then kept as a credit)."""
    settled = Update(reference=receipt.reference, payer=receipt.payer or payer or row.payer)
    try:
        held = await ledger.apply(row.key, Event.SETTLED, settled)
    except Exception as exc:
        # Paid, but the ledger did not take it: keep it as a credit once the store is back.
        log.warning("recording a settled payment failed (%s); kept as a credit", type(exc).__name__)
        credit = Update(
            reference=settled.reference,
            payer=settled.payer,
            credit_until=time.time() + credit_ttl,
        )
        ledger.defer(row.key, Event.CREDIT, credit)
        return refusals.internal_error()
    if held is None:
        # Our lease ran out while pympp settled and another process took the claim over; it
        # settles again and may be refused as a replay. Leave what is needed to match by hand.
        log.warning(
            "settled payment %s.. (challenge %s, reference %s) lost its claim before it was"
            " recorded",
            row.key[:12],
            row.challenge_id,
            receipt.reference,
        )
        return refusals.in_progress()
    return held


async def hold_challenge(store: Store, checked: Checked, key: str, until: float) -> str | None:
    """Hold the credential's challenge for ledger row `key` until it expires; None when held,
    else the ledger key of the other credential (a copy of this one) holding it."""
    name = _CHALLENGE_HOLD + checked.challenge.id
    if await store.put_if_absent_until(name, key, until):
        return None
    holder = await store.get(name)
    return None if holder == key else str(holder)


async def hold(
    ledger: Ledger, store: Store, checked: Checked, row: Payment, until: float
) -> Problem | None:
    """Hold the challenge for `row`; else drop the row and answer as the holder's state says
    (409 while a copy of this credential is served, 403 once it was)."""
    holder = await hold_challenge(store, checked, row.key, until)
    if holder is None:
        return None
    await ledger.release(row.key)
    other = await ledger.get(holder)
    if other is not None and other.status in HELD_STATUSES:
        return refusals.in_progress()
    return refusals.used()


async def drop_challenge(store: Store, checked: Checked) -> None:
    await store.delete(_CHALLENGE_HOLD + checked.challenge.id)


class Pending:
    """A validated payment to settle once the upstream answered with success."""

    __slots__ = ("checked", "credit_ttl", "ledger", "payer", "req", "scrub", "store", "until")

    def __init__(
        self,
        checked: Checked,
        req: PaidRequest,
        *,
        ledger: Ledger,
        store: Store,
        scrub: Scrubber,
        credit_ttl: float,
        payer: str,
        until: float,
    ) -> None:
        self.checked = checked
        self.req = req
        self.ledger = ledger
        self.store = store
        self.scrub = scrub
        self.credit_ttl = credit_ttl
        self.payer = payer
        self.until = until  # the challenge's expiry: the credential is good until then

    async def settle(self, row: Payment) -> tuple[Payment, Receipt] | Problem:
        """Settle now; (the settled row, its receipt), or the answer instead of the upstream's."""
        try:
            moved = await self.ledger.apply(row.key, Event.SETTLING)
        except Exception as exc:
            log.warning("ledger unreachable before settling (%s)", type(exc).__name__)
            await self.release(row)
            return refusals.ledger_unavailable()
        if moved is None:
            return refusals.in_progress()
        try:
            receipt = await settle(self.checked, moved)
        except Exception as exc:
            found = await self._failed(moved, exc)
            if isinstance(found, Problem):
                return found
            receipt = found
        held = await record_settled(self.ledger, moved, receipt, self.payer, self.credit_ttl)
        if isinstance(held, Problem):
            return held
        return held, receipt

    async def _failed(self, row: Payment, exc: Exception) -> Receipt | Problem:
        """A settlement that raised: its receipt when it landed after all, else the answer."""
        if outcome_unknown(exc):
            found = await self._look_up(exc)
            if isinstance(found, Receipt):
                return found
            if found is None:
                # The payment may have landed: kept as a credit that the same credential
                # resolves (pympp's replay store and the chain decide on the retry).
                log.warning("settling after the upstream answered failed (%s); kept", cause(exc))
                until = time.time() + self.credit_ttl
                await self.ledger.finish(row.key, Event.CREDIT, Update(credit_until=until))
                return refusals.internal_error()
            exc = found
        assert isinstance(exc, PaymentError)
        log.warning("settling after the upstream answered was refused: %s", type(exc).__name__)
        await self.ledger.finish(row.key, Event.SETTLE_FAILED)
        await drop_challenge(self.store, self.checked)
        detail = (
            f"the upstream answered, but settling the payment was refused: {exc}. Nothing was "
            "charged and the answer was not delivered; pay one of the fresh challenges"
        )
        return refusals.challenge(self.req, exc, self.scrub, self.scrub(detail))

    async def _look_up(self, exc: Exception) -> Receipt | PaymentError | None:
        """After a broadcast the node answered with a refusal (pympp calls the outcome unknown
        once anything was sent): where the method can look the payment up (Tempo), it landed
        (its receipt) or it did not (the refusal, definitive); None when that cannot be told."""
        refusal = exc.__cause__
        recover = self.checked.offer.built.recover
        if recover is None or not isinstance(refusal, VerificationError):
            return None
        try:
            found = await recover(self.checked.credential, self.checked.challenge)
        except VerificationFailedError as reverted:
            return reverted  # on chain, and it did not pay (reverted): nothing moved
        except Exception as lookup:
            log.warning("looking a refused settlement up failed (%s)", type(lookup).__name__)
            return None
        if found is not None:
            result: Receipt = found
            return result
        return refusal

    async def release(self, row: Payment) -> None:
        """The request failed before settlement: nothing was charged, the credential stays
        good for another try."""
        await self.ledger.finish(row.key, Event.UNSETTLED)
        try:
            await drop_challenge(self.store, self.checked)
        except Exception as exc:
            log.warning("releasing a challenge hold failed (%s)", type(exc).__name__)
