"""The admit stage: what may refuse a request for capacity (rate limits, spend caps,
concurrency, shedding) decides here, after intake and always before the pay stage, so a
refused request is never issued a challenge nor charged, and a credential it carried is not
verified: it stays usable.

A request that presents a credential to a paid route also takes its upstream connection here,
before its payment settles: a full pool answers 503 now, never "charged, then 504".

A route's compiled limits live in its plan (`RoutePlan.limits`, see mpp_proxy/limits); the
chain skips this stage for a route without any, so such a route pays nothing for it.
"""

from __future__ import annotations

from mpp_proxy.core.errors import UpstreamTimeout
from mpp_proxy.core.exchange import Exchange
from mpp_proxy.limits import LocalRate, over_capacity
from mpp_proxy.payments import claimed_payer, has_credential
from mpp_proxy.problems import Problem

POOL_RETRY = 1


def admit_now(ex: Exchange, quick: LocalRate) -> Problem | None:
    """`admit` for a route whose limits are `quick` (a free route, one limit counted in this
    process, nothing held): the same decision without a coroutine."""
    got = quick.take(ex.client, ex.scope["headers"])
    if isinstance(got, int):
        limits = ex.plan.limits
        assert limits is not None
        return limits.refused(-got)
    ex.extra = got
    return None


async def admit(ex: Exchange) -> Problem | None:
    """None to let the request go on (`ex.admission` is then set), else the refusal (429, 503).

    Raises UpstreamUnreachable / UpstreamTimeout (connect) when the connection cannot be
    opened: answered as such, before anything was paid.
    """
    limits = ex.plan.limits
    assert limits is not None
    payment = ex.payment
    payer = claimed_payer(payment) if limits.wants_payer and payment else None
    headers = ex.scope["headers"]
    if limits.sync and not limits.holds:
        # Decided in this process and nothing to hold: no coroutine, no Admission.
        counted = limits.count_now(ex.client, payer, headers)
        if isinstance(counted, Problem):
            return counted
        ex.extra = counted[0]
    else:
        got = await limits.admit(ex.client, payer, headers)
        if isinstance(got, Problem):
            return got
        ex.admission = got
        ex.extra = got.headers
    if payment and has_credential(payment):
        return await _take_connection(ex)
    return None


async def _take_connection(ex: Exchange) -> Problem | None:
    sp = ex.plan.service
    pool, t = sp.pool, sp.timeouts
    try:
        ex.conn = pool.acquire_idle() or await pool.acquire(t.connect, t.pool)
    except UpstreamTimeout as exc:
        if exc.phase != "pool":
            raise
        why = f"using all {pool.max_connections} of its upstream connections"
        return over_capacity(sp.id, POOL_RETRY, why)
    return None
