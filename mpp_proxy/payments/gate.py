"""PaymentGate: per paid request a 402 challenge, a refusal, or an Authorization kept in the ledger.

The pieces it runs: offers (which challenges a route makes), credentials (pure checks), the
ledger (transitions as a table), refusals (the problems), pympp (settlement, behind one module).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from mpp_proxy.config.errors import ConfigError
from mpp_proxy.config.model import BasicAuth, BearerAuth, Config, HeaderAuth, Route, Service
from mpp_proxy.payments import refusals, x402
from mpp_proxy.payments.authorization import Authorization, NotDelivered
from mpp_proxy.payments.challenges import Expiry
from mpp_proxy.payments.credentials import (
    Checked,
    PaidRequest,
    Unsupported,
    Verdict,
    check,
    credential_token,
    expiry_time,
    ledger_key,
)
from mpp_proxy.payments.idempotency import Replay, request_replay
from mpp_proxy.payments.ledger import Event, Ledger, Presented, Update, presented, process_owner
from mpp_proxy.payments.methods import BuiltMethod, build_method
from mpp_proxy.payments.offers import RouteOffers, display, route_offers
from mpp_proxy.payments.pympp import (
    MAX_AUTHORIZATION_SIZE,
    ComposedHandler,
    Credential,
    MalformedCredentialError,
    Mpp,
    PaymentError,
    Receipt,
)
from mpp_proxy.payments.settlement import (
    Pending,
    cause,
    hold,
    outcome_unknown,
    pushed,
    record_settled,
    settle,
    validate,
)
from mpp_proxy.payments.testmoney import METHOD_NAME as TEST_METHOD
from mpp_proxy.payments.testmoney import server_method as test_money_method
from mpp_proxy.problems import Problem
from mpp_proxy.state.base import Payment, PaymentStatus, Store

__all__ = ["PaymentGate"]

log = logging.getLogger("mpp_proxy.payments")

Decision = Authorization | Problem


class PaymentGate:
    """Everything static per paid route is computed here once; `authorize` does the rest."""

    def __init__(self, config: Config, store: Store, *, owner: str | None = None) -> None:
        """`owner` names this process in the ledger's leases; the default is one id per process,
        shared by every gate it builds, so a gate replaced on reload keeps its requests' leases
        alive through its successor. Tests pass distinct owners to play several processes.
        """
        secret = config.proxy.secret_key
        if secret is None or not secret.value:
            raise ConfigError("proxy.secret_key is required when a route has a price")
        self.config = config
        self.store = store
        self.realm = config.proxy.realm
        self.owner = owner or process_owner()
        self.credit_ttl = float(config.proxy.credit_ttl)
        self._secret = secret.value
        self._expiry = Expiry(float(config.proxy.challenge_ttl))
        self.ledger = Ledger(
            store,
            owner=self.owner,
            lease_seconds=float(config.proxy.lease_seconds),
            credit_ttl=self.credit_ttl,
        )
        self._jobs: set[asyncio.Future[Any]] = set()
        self.started = False  # the ledger is open (start() ran)
        self._methods = _build_methods(config, store)
        self.mpp = Mpp(
            # pympp needs a method to exist; a gate for free routes only never uses it.
            methods=[m.server for m in self._methods.values()] or test_money_method(store=store),
            realm=self.realm,
            secret_key=self._secret,
            store=store,
        )
        self._scrub = refusals.Scrubber(_secrets(config, self._secret, self._methods))
        self._offers: dict[tuple[str, str], RouteOffers] = {}
        for service in config.services:
            for route in service.routes:
                if route.price is not None:
                    self.offers_for(service, route)

    # ---------------------------------------------------------------- routes

    def offers_for(self, service: Service, route: Route) -> RouteOffers:
        """The route's offers, built once (the core keeps them in the route's plan)."""
        key = (service.id, route.key)
        offers = self._offers.get(key)
        if offers is None:
            offers = self._offers[key] = route_offers(
                service,
                route,
                self._methods,
                secret=self._secret,
                realm=self.realm,
                expiry=self._expiry,
            )
        return offers

    def pympp_handler(self, service: Service, route: Route) -> ComposedHandler:
        """pympp's own handler for the route (same methods and price), for comparisons."""
        return pympp_handler(self, service, route)

    # ---------------------------------------------------------------- lifespan

    async def start(self) -> None:
        await self.ledger.start()
        self.started = True

    async def close(self) -> None:
        self.started = False
        await self.ledger.stop()
        if self._jobs:
            await asyncio.gather(*self._jobs, return_exceptions=True)
        await self.ledger.retry_pending()
        for built in self._methods.values():
            with contextlib.suppress(Exception):
                await built.close()

    # ---------------------------------------------------------------- authorize

    async def authorize(self, req: PaidRequest) -> Decision:
        """Decide one paid request. Never raises for a client's input or a backend failure."""
        if req.credential is None and req.x402 is None:
            return refusals.challenge(req, None, self._scrub)
        # From the first ledger write on, the decision runs in a task the request cannot cancel:
        # a claim written (or a payment settled) just before the client went away or shutdown
        # began must end as a credit, not as a row held by nobody.
        task = asyncio.ensure_future(self._decide(req, req.credential or ""))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            self._background(_credit_when_done(task))
            raise

    async def _decide(self, req: PaidRequest, credential: str) -> Decision:
        try:
            return await self._authorize(req, credential)
        except Exception as exc:
            log.warning("payment backend failure: %s", type(exc).__name__)
            return refusals.internal_error()

    async def _authorize(self, req: PaidRequest, credential: str) -> Decision:
        token = credential_token(credential) if req.x402 is None else x402_token(req.x402)
        if token is None:
            return self._refuse(req, MalformedCredentialError("empty or oversized"))
        key = ledger_key(token)
        # A new credential is checked, then claimed in one write; a refused one may be known.
        checked = self._check(req, token, allow_expired=False)
        if not isinstance(checked, Checked):
            known = await self.ledger.get(key)
            return (
                self._refuse(req, checked) if known is None else await self._seen(req, token, known)
            )
        status = PaymentStatus.PENDING if checked.offer.settle_after else PaymentStatus.IN_FLIGHT
        row = new_row(req, key, checked, self.owner, self.ledger.lease(time.time()), status)
        existing = await self.ledger.claim(row)
        if existing is not None:
            return await self._seen(req, token, existing)
        if checked.offer.settle_after:
            return await self._validate(req, checked, row)
        return await self._settle(req, checked, row)

    async def _seen(self, req: PaidRequest, token: str, row: Payment) -> Decision:
        """A credential the ledger knows: an idempotent retry's stored answer, or its row's."""
        replay = self._replay(req, row.key)
        if replay is not None and (stored := await replay.find()) is not None:
            return replay.answer(stored)
        return await self._known(req, token, row)

    def _replay(self, req: PaidRequest, key: str) -> Replay | None:
        return request_replay(self.store, req.idempotency, key, req.fingerprint, self.config.proxy)

    def _check(self, req: PaidRequest, token: str, *, allow_expired: bool) -> Verdict:
        if req.x402 is not None:
            return x402.check(req, self.realm)
        return check(
            req,
            token,
            secret=self._secret,
            realm=self.realm,
            now=time.time(),
            allow_expired=allow_expired,
        )

    def _background(self, coro: Any) -> None:
        job = asyncio.ensure_future(coro)
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def _settle(self, req: PaidRequest, checked: Checked, row: Payment) -> Decision:
        """Run pympp's verification and settlement for a row this process holds."""
        try:
            receipt = await settle(checked, row)
        except Exception as exc:
            await self.ledger.release(row.key)
            return self._backend_refusal(req, exc)
        payer = checked.credential.source or row.payer
        held = await record_settled(self.ledger, row, receipt, payer, self.credit_ttl)
        if isinstance(held, Problem):
            return held
        paid_x402 = checked.credential if req.x402 is not None else None
        return self._authorization(req, held, receipt, redeemed=False, x402=paid_x402)

    async def _validate(self, req: PaidRequest, checked: Checked, row: Payment) -> Decision:
        """Settle after the upstream answered: check the credential now, settle nothing."""
        try:
            validation = await validate(checked)
            if pushed(validation):
                # The client broadcast it already: it settles now, as when settled before.
                moved = await self.ledger.apply(row.key, Event.SETTLING)
                if moved is None:
                    return refusals.in_progress()
                return await self._settle(req, checked, moved)
            # An x402 payment has no challenge: it is held as long as a challenge would be.
            until = expiry_time(checked.challenge.expires) or time.time() + self._expiry.ttl
            taken = await hold(self.ledger, self.store, checked, row, until)
            if taken is not None:
                return taken
        except Exception as exc:
            await self.ledger.release(row.key)
            return self._backend_refusal(req, exc)
        pending = Pending(
            checked,
            req,
            ledger=self.ledger,
            store=self.store,
            scrub=self._scrub,
            credit_ttl=self.credit_ttl,
            payer=validation.payer or checked.credential.source or row.payer,
            until=until,
        )
        return Authorization(
            self.ledger,
            row,
            None,
            redeemed=False,
            credit_ttl=self.credit_ttl,
            scrub=self._scrub,
            pending=pending,
            spawn=self._background,
            replay=self._replay(req, row.key),
            x402=checked.credential if req.x402 is not None else None,
        )

    def _backend_refusal(self, req: PaidRequest, exc: Exception) -> Problem:
        """The answer when pympp refused a credential or failed (nothing is kept)."""
        if outcome_unknown(exc):
            log.warning("payment backend failure (%s)", cause(exc))
            return refusals.internal_error()
        assert isinstance(exc, PaymentError)
        return self._refuse(req, exc)

    async def _known(self, req: PaidRequest, token: str, row: Payment) -> Decision:
        """A credential the ledger has seen: redeem, take over, or refuse it."""
        now = time.time()
        verdict = presented(
            row, now=now, request=req.text, unrecorded=self.ledger.unrecorded(row.key)
        )
        final = refusals.known(req, row, verdict, self._scrub)
        if final is not None:
            return final
        if verdict is Presented.FORFEIT:
            with contextlib.suppress(Exception):
                await self.ledger.apply(row.key, Event.FORFEIT)
            return refusals.forfeited(row.credit_until)
        held = await self._hold(row, verdict, now)
        if held is None:
            again = await self.ledger.get(row.key)
            if again is not None and again.status in _SETTLED_FINAL:
                return await self._known(req, token, again)
            return refusals.in_progress()
        if verdict in (Presented.RECLAIM, Presented.RESUME):
            return await self._recheck(req, token, held)
        if not held.reference:
            return await self._resettle(req, token, held)
        receipt = redeemed_receipt(self._methods.get(held.method), held)
        return self._authorization(req, held, receipt, redeemed=True)

    async def _hold(self, row: Payment, verdict: Presented, now: float) -> Payment | None:
        """Claim a row nobody holds for this request: a credit (REDEEM), a released claim
        (RECLAIM), or a dead process's claim (TAKE_OVER, RESUME)."""
        update = Update(
            owner=self.owner, lease_until=self.ledger.lease(now), attempts=row.attempts + 1
        )
        if verdict is Presented.REDEEM:
            return await self.ledger.apply(row.key, Event.REDEEM, replace(update, credit_until=0.0))
        if verdict is Presented.RECLAIM:
            return await self.ledger.apply(row.key, Event.RECLAIM, update)
        event = Event.RESUME if verdict is Presented.RESUME else Event.TAKE_OVER
        return await self.ledger.apply(row.key, event, update, expired_before=now)

    async def _recheck(self, req: PaidRequest, token: str, held: Payment) -> Decision:
        """A claim that was never charged, presented again: check and validate it afresh."""
        checked = self._check(req, token, allow_expired=False)
        if not isinstance(checked, Checked):
            await self.ledger.release(held.key)
            return self._refuse(req, checked)
        return await self._validate(req, checked, held)

    async def _resettle(self, req: PaidRequest, token: str, held: Payment) -> Decision:
        """Claimed but never recorded as settled (the process died while settling): let pympp
        decide again; its replay store refuses a payment that did land."""
        checked = self._check(req, token, allow_expired=True)
        if not isinstance(checked, Checked):
            await self.ledger.release(held.key)
            return self._refuse(req, checked)
        return await self._settle(req, checked, held)

    def _authorization(
        self,
        req: PaidRequest,
        row: Payment,
        receipt: Receipt,
        *,
        redeemed: bool,
        x402: Credential | None = None,
    ) -> Authorization:
        offer = next((o for o in req.offers.offers if o.built.name == row.method), None)
        return Authorization(
            self.ledger,
            row,
            receipt,
            redeemed=redeemed,
            credit_ttl=self.credit_ttl,
            scrub=self._scrub,
            refund=offer.refund if offer is not None else None,
            spawn=self._background,
            replay=self._replay(req, row.key),
            x402=x402,
        )

    # ---------------------------------------------------------------- refusals

    def _refuse(self, req: PaidRequest, error: PaymentError | Unsupported) -> Problem:
        """The problem for a refused credential: 402 + fresh challenges, or pympp's 400/403."""
        if isinstance(error, Unsupported):
            return refusals.unsupported(req.offers.offered(), error.method)
        if error.status == 402:
            return refusals.challenge(req, error, self._scrub)
        return refusals.final_refusal(error, self._scrub)


# ------------------------------------------------------------------------------ helpers


def new_row(
    req: PaidRequest,
    key: str,
    checked: Checked,
    owner: str,
    lease_until: float,
    status: PaymentStatus = PaymentStatus.IN_FLIGHT,
) -> Payment:
    """The claim a new credential starts as: in flight, or pending when it settles after."""
    now = time.time()
    offer = checked.offer
    return Payment(
        key=key,
        challenge_id=checked.challenge.id,
        method=offer.built.name,
        kind=offer.built.config.kind,
        reference="",
        amount=offer.amount,
        currency=offer.built.currency,
        service=req.offers.service_id,
        route=req.offers.route_key,
        scope=req.text,
        payer=checked.credential.source or "",
        status=status,
        owner=owner,
        lease_until=lease_until,
        credit_until=0.0,
        attempts=1,
        created_at=now,
        updated_at=now,
    )


def pympp_handler(gate: PaymentGate, service: Service, route: Route) -> ComposedHandler:
    price = route.price
    assert price is not None
    entries = []
    for offer in gate.offers_for(service, route).offers:
        options: dict[str, Any] = {"amount": display(price.amount), **offer.built.route_options}
        options["expires_in"] = timedelta(seconds=gate._expiry.ttl)
        if route.description:
            options["description"] = route.description
        entries.append((offer.built.server, options))
    return gate.mpp.compose(*entries)


def redeemed_receipt(built: BuiltMethod | None, held: Payment) -> Receipt:
    """The receipt of a credit being spent: the original payment's reference."""
    test = held.kind == "test"
    return Receipt(
        status="success",
        timestamp=datetime.now(UTC),
        reference=held.reference,
        method=built.wire_name if built else (TEST_METHOD if test else held.kind),
        extra={"note": "test money: nothing was paid"} if test else None,
    )


def x402_token(signature: str) -> str | None:
    """An x402 payment header as a ledger token; None when empty or oversized."""
    return signature if 0 < len(signature) <= MAX_AUTHORIZATION_SIZE else None


def _build_methods(config: Config, store: Store) -> dict[str, BuiltMethod]:
    """The configured methods some paid route uses, in config order."""
    used = {
        name
        for service in config.services
        for route in service.routes
        if route.price is not None
        for name in route.price.pay_with
    }
    allow_test = config.proxy.allow_test_payments
    return {
        m.name: build_method(m, store, allow_test=allow_test)
        for m in config.methods
        if m.name in used
    }


def _secrets(config: Config, secret: str, methods: dict[str, BuiltMethod]) -> list[str]:
    found = [secret]
    for m in methods.values():
        found.extend(m.secrets)
    for service in config.services:
        auth = service.auth
        if isinstance(auth, BearerAuth):
            found.append(auth.token.value)
        elif isinstance(auth, HeaderAuth):
            found.append(auth.value.value)
        elif isinstance(auth, BasicAuth):
            found.extend((auth.username.value, auth.password.value))
    return found


async def _credit_when_done(task: asyncio.Future[Decision]) -> None:
    with contextlib.suppress(Exception):
        result = await task
        if isinstance(result, Authorization):
            await result.undelivered(NotDelivered("cancelled", 502))


# Rows a concurrent presenter may have just ended: decide the credential again from them.
_SETTLED_FINAL = frozenset(
    {
        PaymentStatus.DELIVERED,
        PaymentStatus.FORFEITED,
        PaymentStatus.REFUNDED,
        PaymentStatus.SETTLE_FAILED,
        PaymentStatus.VOIDED,
    }
)
