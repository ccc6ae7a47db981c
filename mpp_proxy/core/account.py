"""The account stage: how a request ended, recorded where it matters (the payment ledger).

A paid request ends exactly once: delivered (its payment is kept as revenue) or not delivered
(kept as a credit the same credential can redeem). Free requests have nothing to record yet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mpp_proxy.payments import NotDelivered
from mpp_proxy.problems import Problem

if TYPE_CHECKING:
    from mpp_proxy.core.exchange import Exchange


async def delivered(ex: Exchange) -> None:
    """The upstream answered with success and the whole body reached the client."""
    if ex.auth is not None:
        await ex.auth.delivered()


async def undelivered(ex: Exchange, why: NotDelivered, problem: Problem | None = None) -> Problem:
    """Before the head went out: the answer is `problem`, or for a paid request the credit."""
    if ex.auth is not None:
        return await ex.auth.credit(why)
    assert problem is not None
    return problem


async def aborted(ex: Exchange, why: NotDelivered) -> None:
    """No answer can follow (the head went out, the client left, the server stops)."""
    if ex.auth is not None:
        await ex.auth.credit(why)
