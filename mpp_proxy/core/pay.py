"""The pay stage, from the request's side: a paid route's request goes to the payment gate,
which answers (402, 400, 403, 409, 500) or authorizes it."""

from __future__ import annotations

from mpp_proxy.core.exchange import Exchange
from mpp_proxy.payments import PaidRequest, PaymentGate
from mpp_proxy.problems import Problem, problem

NOT_READY = problem(
    503,
    "not-ready",
    "Gateway not ready",
    "the payment state store is unreachable; retry later",
    headers=((b"retry-after", b"5"),),
)


async def pay(ex: Exchange, gate: PaymentGate) -> Problem | None:
    """None when the request may go on (`ex.auth` is then set), else the gate's answer."""
    if not gate.started:
        return NOT_READY
    offers = ex.plan.offers
    assert offers is not None and ex.payment is not None
    query: bytes = ex.scope.get("query_string", b"")
    req = PaidRequest.of(offers, ex.method, ex.path, query.decode("latin-1"), ex.payment)
    if req.credential is None and ex.more:
        # Nothing will be forwarded: the body is read to its end first, so that a body over
        # the limit (413) or one that stalls (408) is answered as such rather than with a 402.
        assert ex.reader is not None
        await ex.reader.discard()
    decision = await gate.authorize(req)
    if isinstance(decision, Problem):
        return decision
    ex.auth = decision
    return None
