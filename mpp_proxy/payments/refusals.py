"""Refusals: every problem the payment stage answers with, worded in one place.

402s carry fresh challenges; 400/403/409/500 do not. Details never carry a secret: anything
that echoes text from a backend or an upstream goes through `Scrubber`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mpp_proxy.payments.ledger import Presented
from mpp_proxy.payments.pympp import (
    InternalPaymentError,
    InvalidChallengeError,
    PaymentError,
    PaymentOutcomeUnknownError,
    VerificationFailedError,
)
from mpp_proxy.payments.x402 import required_header
from mpp_proxy.problems import PAYMENT_TYPE, Problem, problem
from mpp_proxy.state.base import Payment

if TYPE_CHECKING:
    from mpp_proxy.payments.credentials import PaidRequest

Headers = tuple[tuple[bytes, bytes], ...]
NO_STORE = (b"cache-control", b"no-store")
_STRIPE_KEY = re.compile(r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]+")
# Upstream bodies longer than this are left out of a credit problem.
_UPSTREAM_BODY_LIMIT = 64 * 1024


class Scrubber:
    """Blanks configured secrets (and anything shaped like a Stripe key) out of text."""

    __slots__ = ("_secrets",)

    def __init__(self, secrets: Iterable[str]) -> None:
        self._secrets = tuple(sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True))

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return _STRIPE_KEY.sub("***", text)


def refusal(p: Problem, *headers: tuple[bytes, bytes]) -> Problem:
    """A payment answer: never cached."""
    return p.with_headers(NO_STORE, *headers)


def payment_required(what: str, price: str) -> Problem:
    """The static part of a route's plain 402 (its challenges are added per request)."""
    return refusal(
        problem(
            402,
            "payment-required",
            "Payment Required",
            f"{what} costs {price}; pay one of the offers in the WWW-Authenticate headers and "
            "retry with the credential.",
            base=PAYMENT_TYPE,
        )
    )


def payment_refused(error: PaymentError, detail: str, challenges: Headers) -> Problem:
    """402 naming why the credential was refused, with fresh challenges."""
    slug = error.type.rsplit("/", 1)[-1]
    p = problem(
        402,
        slug,
        error.title,
        detail,
        base=PAYMENT_TYPE,
        hint="pay one of the fresh challenges in the WWW-Authenticate headers",
    )
    return refusal(p, *challenges)


def challenge(
    req: PaidRequest, error: PaymentError | None, scrub: Scrubber, detail: str | None = None
) -> Problem:
    """402 with one fresh challenge per acceptable offer, saying why when `error` is set."""
    offers = req.offers
    order = offers.acceptable(req.accept)
    if not order:
        return unsupported(offers.offered(), None)
    challenges = offers.challenges(order, req.scope, req.digest)
    x402 = required_header(req, None if error is None else scrub(detail or str(error)))
    if x402 is not None:
        challenges = (*challenges, x402)
    if error is None:
        return offers.required.with_headers(*challenges)
    return payment_refused(error, scrub(detail or str(error)), challenges)


def known(req: PaidRequest, row: Payment, verdict: Presented, scrub: Scrubber) -> Problem | None:
    """The answer for a known credential that can no longer be served, else None."""
    if verdict is Presented.USED:
        return used()
    if verdict is Presented.FORFEITED:
        return forfeited(row.credit_until)
    if verdict is Presented.REFUNDED:
        return refunded_credential()
    if verdict is Presented.VOIDED:
        return voided(row.note)
    if verdict is Presented.BUSY:
        return in_progress()
    if verdict is Presented.SETTLE_FAILED:
        failed = VerificationFailedError("settling this credential's payment was refused")
        return challenge(req, failed, scrub)
    if verdict is Presented.OTHER_REQUEST:
        error = InvalidChallengeError(None, "this credential was bought for another request")
        return challenge(
            req, error, scrub, f"this credential pays for {row.scope}, not for {req.text}"
        )
    return None


def final_refusal(error: PaymentError, scrub: Scrubber) -> Problem:
    """pympp's own 400/403 for a credential that no fresh challenge can fix."""
    if isinstance(error, (InternalPaymentError, PaymentOutcomeUnknownError)):
        return internal_error()
    slug = error.type.rsplit("/", 1)[-1]
    return refusal(problem(error.status, slug, error.title, scrub(str(error)), base=PAYMENT_TYPE))


def unsupported(offered: list[str], method: str | None) -> Problem:
    if method is None:
        detail = (
            "your Accept-Payment header excludes every payment method this route accepts: "
            + ", ".join(offered)
        )
    else:
        detail = f'payment method "{method}" is not accepted here; use ' + ", ".join(offered)
    return refusal(
        problem(
            400,
            "method-unsupported",
            "Method Unsupported",
            detail,
            base=PAYMENT_TYPE,
            methods=offered,
        )
    )


def used() -> Problem:
    return refusal(
        problem(
            403,
            "credential-used",
            "Credential already used",
            "this credential was already used; pay again for a new request",
        )
    )


def forfeited(credit_until: float) -> Problem:
    detail = f"this credential's credit expired at {iso(credit_until)} and was forfeited"
    return refusal(problem(403, "credit-forfeited", "Credit forfeited", detail))


def voided(note: str) -> Problem:
    detail = f"this credential's credit was {note}" if note else "this credit was voided"
    return refusal(problem(403, "credit-voided", "Credit voided", detail))


def in_progress() -> Problem:
    return refusal(
        problem(
            409,
            "payment-in-progress",
            "Payment in progress",
            "another request with this credential is being served; wait for it to finish",
        )
    )


def ledger_unavailable() -> Problem:
    return refusal(
        problem(
            503,
            "ledger-unavailable",
            "Payment ledger unavailable",
            "the payment ledger could not be written, so the payment was not settled and nothing "
            "was charged; retry later with the same credential",
            headers=((b"retry-after", b"5"),),
        )
    )


def internal_error() -> Problem:
    return refusal(
        problem(
            500,
            "internal-payment-error",
            "Internal Payment Error",
            "the payment backend failed; the payment may or may not have settled, so do not pay "
            "again blindly: retry later with the same credential",
            base=PAYMENT_TYPE,
        )
    )


def credited(
    payment: Payment,
    *,
    reason: str,
    status: int,
    upstream_status: int | None,
    upstream_body: bytes,
    until: float,
    scrub: Scrubber,
) -> Problem:
    """The answer to a paid request that was not delivered: its payment is kept as a credit."""
    when = iso(until)
    what, extra = _upstream_failure(reason, upstream_status, upstream_body, scrub)
    extra["credit"] = {"until": when, **_paid(payment)}
    p = problem(
        status,
        "payment-credited",
        "Upstream failed; payment kept as a credit",
        f"{what}. Your payment was kept as a credit: retry the same request with the same "
        f"credential before {when}; you will not be charged again.",
        **extra,
    )
    return refusal(p)


def not_charged(
    *,
    reason: str,
    status: int,
    upstream_status: int | None,
    upstream_body: bytes,
    valid_until: float | None,
    scrub: Scrubber,
) -> Problem:
    """The answer to a paid request whose upstream failed before its payment settled."""
    what, extra = _upstream_failure(reason, upstream_status, upstream_body, scrub)
    if valid_until is not None:
        until = iso(valid_until)
        extra["credential"] = {"validUntil": until}
        retry = f"your credential stays valid until {until}: retry the same request with it"
    else:
        retry = "retry the same request with the same credential"
    p = problem(
        status,
        "payment-not-charged",
        "Upstream failed; nothing was charged",
        f"{what}. Your payment was not settled, so nothing was charged; {retry}.",
        **extra,
    )
    return refusal(p)


def refunded(
    payment: Payment,
    refund: str,
    *,
    reason: str,
    status: int,
    upstream_status: int | None,
    upstream_body: bytes,
    scrub: Scrubber,
) -> Problem:
    """The answer to a paid request that was not delivered and whose payment was given back."""
    what, extra = _upstream_failure(reason, upstream_status, upstream_body, scrub)
    extra["refund"] = {"id": refund, **_paid(payment)}
    p = problem(
        status,
        "payment-refunded",
        "Upstream failed; payment refunded",
        f"{what}. Your payment was refunded (refund {refund}); pay again to retry.",
        **extra,
    )
    return refusal(p)


def refunded_credential() -> Problem:
    return refusal(
        problem(
            403,
            "credential-refunded",
            "Credential refunded",
            "this credential's payment was refunded; pay again for a new request",
        )
    )


def _paid(payment: Payment) -> dict[str, str]:
    """What a problem says about the payment it kept or gave back."""
    return {
        "reference": payment.reference,
        "method": payment.method,
        "amount": payment.amount,
        "currency": payment.currency,
    }


def _upstream_failure(
    reason: str, upstream_status: int | None, upstream_body: bytes, scrub: Scrubber
) -> tuple[str, dict[str, Any]]:
    """What went wrong upstream, as a sentence and as problem members."""
    what = (
        f"the upstream answered {upstream_status}"
        if upstream_status is not None
        else f"the upstream request failed ({reason})"
    )
    extra: dict[str, Any] = {"reason": reason}
    if upstream_status is not None:
        extra["upstreamStatus"] = upstream_status
    text = _textual(upstream_body)
    if text is not None:
        extra["upstreamBody"] = scrub(text)
    return what, extra


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _textual(body: bytes) -> str | None:
    if not body or len(body) > _UPSTREAM_BODY_LIMIT:
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(ord(c) < 0x20 and c not in "\t\r\n" for c in text):
        return None
    return text
