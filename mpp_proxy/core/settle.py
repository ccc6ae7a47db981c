"""The settle stage: a payment that waited for the upstream's answer settles on its success head,
before that head goes out, so the receipt on it is true; a refused settlement answers instead."""

from __future__ import annotations

from mpp_proxy.payments import Authorization
from mpp_proxy.problems import Problem


async def settle(auth: Authorization) -> Problem | None:
    """None when the payment is settled (now or before forwarding), else the answer to send in
    place of the upstream's (402 with fresh challenges when settling was refused)."""
    if auth.settled:
        return None
    return await auth.settle()
