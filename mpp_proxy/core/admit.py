"""The admit stage: what may refuse a request for capacity (rate limits, spend caps,
concurrency, shedding) decides here, after intake and always before the pay stage, so a
refused request is never issued a challenge nor charged.

A route's plan holds its admit step (`RoutePlan.admit`), or None when it has no limits: then
the stage costs nothing.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from mpp_proxy.problems import Problem

if TYPE_CHECKING:
    from mpp_proxy.core.exchange import Exchange

# Answers a problem (429, 503) to refuse the request, or None to let it go on.
Admit = Callable[["Exchange"], Awaitable[Problem | None]]
