"""The admit stage: what may refuse a request for capacity (rate limits, spend caps,
concurrency, shedding) decides here, after intake and always before the pay stage, so a
refused request is never issued a challenge nor charged.

A route's compiled limits live in its plan (`RoutePlan.limits`); the chain skips this stage
for a route without any, so such a route pays nothing for it. No route has limits yet.
"""

from __future__ import annotations

from mpp_proxy.core.exchange import Exchange
from mpp_proxy.problems import Problem


async def admit(ex: Exchange) -> Problem | None:
    """None to let the request go on, else the refusal (429, 503)."""
    return None
