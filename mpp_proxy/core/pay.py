"""The pay stage, from the request's side: a paid route's request goes to the payment gate,
which answers (402, 400, 403, 409, 500) or authorizes it."""

from __future__ import annotations

from dataclasses import replace

from mpp_proxy.core.exchange import Exchange
from mpp_proxy.core.types import Scope
from mpp_proxy.payments import PaidRequest, PaymentGate
from mpp_proxy.payments.idempotency import body_fingerprint, check_key, fingerprint
from mpp_proxy.payments.x402 import payment_identifier
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
    idempotency = ex.idempotency
    if idempotency is not None and (bad := check_key(idempotency)) is not None:
        await _drain(ex)
        return bad
    query = ex.scope.get("query_string", b"").decode("latin-1")
    digest = None
    if offers.rule is not None:
        size = ex.content_length if ex.content_length is not None else len(ex.body)
        priced = offers.priced(body=ex.body, query=query, size=size)
        if isinstance(priced, Problem):
            await _drain(ex)
            return priced
        offers, digest = priced
    req = PaidRequest.of(offers, ex.method, ex.path, query, ex.payment, digest)
    target = ex.path + ("?" + query if query else "")
    if offers.x402:
        req = replace(req, resource=resource_url(ex.scope, target))
        if idempotency is None and req.x402 is not None and req.credential is None:
            idempotency = payment_identifier(req.x402)
    if idempotency is not None:
        # A streamed body (an x402 retry id read late) is fingerprinted by its length.
        body = f"streamed {ex.content_length}" if ex.more else body_fingerprint(ex.body)
        print_ = fingerprint(ex.method, target, body)
        req = replace(req, idempotency=idempotency, fingerprint=print_)
    if req.credential is None:
        await _drain(ex)
    decision = await gate.authorize(req)
    if isinstance(decision, Problem):
        return decision
    ex.auth = decision
    return None


def resource_url(scope: Scope, target: str) -> str:
    """The absolute URL the client asked for (what an x402 payment names as its resource)."""
    host = next((v for k, v in scope["headers"] if k == b"host"), b"").decode("latin-1")
    scheme: str = scope.get("scheme", "http")
    return f"{scheme}://{host}{target}"


async def _drain(ex: Exchange) -> None:
    if ex.more:
        # Nothing will be forwarded: the body is read to its end first, so that a body over
        # the limit (413) or one that stalls (408) is answered as such rather than with a 402.
        assert ex.reader is not None
        await ex.reader.discard()
        ex.more = False
