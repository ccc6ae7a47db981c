"""The account stage: how a request ended, recorded where it matters (the payment ledger).

A paid request ends exactly once: delivered (its payment is kept as revenue) or not delivered
(released when it had not settled yet, else kept as a credit the same credential can redeem,
or refunded). Free requests (no authorization) have nothing to record yet.
"""

from __future__ import annotations

from mpp_proxy.payments import Authorization, NotDelivered
from mpp_proxy.payments.authorization import Response
from mpp_proxy.problems import Problem


async def delivered(auth: Authorization | None, response: Response | None = None) -> None:
    """The upstream answered with success and the whole body reached the client (`response`
    is kept for retries with the same Idempotency-Key)."""
    if auth is not None:
        await auth.delivered(response)


async def undelivered(
    auth: Authorization | None, why: NotDelivered, problem: Problem | None = None
) -> Problem:
    """Before the head went out: the answer is `problem`, or for a paid request what became of
    its payment."""
    if auth is not None:
        return await auth.undelivered(why)
    assert problem is not None
    return problem


async def aborted(auth: Authorization | None, why: NotDelivered) -> None:
    """No answer can follow (the head went out, the client left, the server stops)."""
    if auth is not None:
        await auth.undelivered(why)
