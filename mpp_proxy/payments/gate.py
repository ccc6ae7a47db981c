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
from mpp_proxy.payments import refusals
from mpp_proxy.payments.authorization import Authorization, NotDelivered
from mpp_proxy.payments.challenges import Expiry
from mpp_proxy.payments.credentials import (
    Checked,
    PaidRequest,
    Unsupported,
    Verdict,
    check,
    credential_token,
    ledger_key,
)
from mpp_proxy.payments.ledger import Event, Ledger, Presented, Update, presented, process_owner
from mpp_proxy.payments.methods import BuiltMethod, build_method
from mpp_proxy.payments.offers import RouteOffers, display, route_offers
from mpp_proxy.payments.pympp import (
    ComposedHandler,
    CredentialReplayedError,
    InternalPaymentError,
    InvalidChallengeError,
    MalformedCredentialError,
    Mpp,
    PaymentError,
    PaymentOutcomeUnknownError,
    Receipt,
    VerifyContext,
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
        price = route.price
        assert price is not None
        entries = []
        for offer in self.offers_for(service, route).offers:
            options: dict[str, Any] = {"amount": display(price.amount), **offer.built.route_options}
            options["expires_in"] = timedelta(seconds=self._expiry.ttl)
            if route.description:
                options["description"] = route.description
            entries.append((offer.built.server, options))
        return self.mpp.compose(*entries)

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
        if req.credential is None:
            return self._challenge(req, None)
        # From the first ledger write on, the decision runs in a task the request cannot cancel:
        # a claim written (or a payment settled) just before the client went away or the server
        # began shutting down must end as a credit, not as a row held by nobody.
        task = asyncio.ensure_future(self._decide(req, req.credential))
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
        token = credential_token(credential)
        if token is None:
            return self._refuse(req, MalformedCredentialError("empty or oversized"))
        key = ledger_key(token)
        row = await self.ledger.get(key)
        if row is not None:
            return await self._known(req, token, row)
        checked = self._check(req, token, allow_expired=False)
        if not isinstance(checked, Checked):
            return self._refuse(req, checked)
        row = new_row(req, key, checked, self.owner, self.ledger.lease(time.time()))
        existing = await self.ledger.claim(row)
        if existing is not None:
            return await self._known(req, token, existing)
        return await self._settle(req, checked, row)

    def _check(self, req: PaidRequest, token: str, *, allow_expired: bool) -> Verdict:
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
            receipt = await _verify_and_settle(checked, row)
        except (InternalPaymentError, PaymentOutcomeUnknownError) as exc:
            await self.ledger.release(row.key)
            log.warning("payment backend failure (%s)", _cause(exc))
            return refusals.internal_error()
        except PaymentError as exc:
            await self.ledger.release(row.key)
            return self._refuse(req, exc)
        except Exception as exc:
            await self.ledger.release(row.key)
            log.warning("payment backend failure (%s)", type(exc).__name__)
            return refusals.internal_error()
        settled = Update(
            reference=receipt.reference,
            payer=receipt.payer or checked.credential.source or row.payer,
        )
        try:
            held = await self.ledger.apply(row.key, Event.SETTLED, settled)
        except Exception as exc:
            # Paid, but the ledger did not take it: keep it as a credit once the store is back.
            log.warning(
                "recording a settled payment failed (%s); kept as a credit", type(exc).__name__
            )
            until = time.time() + self.credit_ttl
            credit = Update(reference=settled.reference, payer=settled.payer, credit_until=until)
            self.ledger.defer(row.key, Event.CREDIT, credit)
            return refusals.internal_error()
        if held is None:
            # Our lease ran out while pympp settled and another process took the claim over; it
            # settles again and may be refused as a replay. Leave what is needed to match by hand.
            log.warning(
                "settled payment %s.. (challenge %s, reference %s) lost its claim before it was"
                " recorded",
                row.key[:12],
                row.challenge_id,
                receipt.reference,
            )
            return refusals.in_progress()
        return self._authorization(held, receipt, redeemed=False)

    async def _known(self, req: PaidRequest, token: str, row: Payment) -> Decision:
        """A credential the ledger has seen: redeem, take over, or refuse it."""
        now = time.time()
        verdict = presented(
            row, now=now, request=req.text, unrecorded=self.ledger.unrecorded(row.key)
        )
        if verdict is Presented.USED:
            return refusals.used()
        if verdict is Presented.FORFEITED:
            return refusals.forfeited(row.credit_until)
        if verdict is Presented.BUSY:
            return refusals.in_progress()
        if verdict is Presented.OTHER_REQUEST:
            error = InvalidChallengeError(None, "this credential was bought for another request")
            detail = f"this credential pays for {row.scope}, not for {req.text}"
            return self._challenge(req, error, detail=detail)
        if verdict is Presented.FORFEIT:
            with contextlib.suppress(Exception):
                await self.ledger.forfeit(row.key)
            return refusals.forfeited(row.credit_until)
        held = await self._hold(row, verdict, now)
        if held is None:
            again = await self.ledger.get(row.key)
            if again is not None and again.status in (
                PaymentStatus.DELIVERED,
                PaymentStatus.FORFEITED,
            ):
                return await self._known(req, token, again)
            return refusals.in_progress()
        if not held.reference:
            return await self._resettle(req, token, held)
        return self._authorization(held, self._redeemed_receipt(held), redeemed=True)

    async def _hold(self, row: Payment, verdict: Presented, now: float) -> Payment | None:
        """Claim a credited row (REDEEM) or a dead process's claim (TAKE_OVER) for this request."""
        update = Update(
            owner=self.owner, lease_until=self.ledger.lease(now), attempts=row.attempts + 1
        )
        if verdict is Presented.REDEEM:
            return await self.ledger.apply(row.key, Event.REDEEM, replace(update, credit_until=0.0))
        return await self.ledger.apply(row.key, Event.TAKE_OVER, update, expired_before=now)

    async def _resettle(self, req: PaidRequest, token: str, held: Payment) -> Decision:
        """Claimed but never recorded as settled (the process died while settling): let pympp
        decide again; its replay store refuses a payment that did land."""
        checked = self._check(req, token, allow_expired=True)
        if not isinstance(checked, Checked):
            await self.ledger.release(held.key)
            return self._refuse(req, checked)
        return await self._settle(req, checked, held)

    def _redeemed_receipt(self, held: Payment) -> Receipt:
        """The receipt of a credit being spent: the original payment's reference."""
        built = self._methods.get(held.method)
        test = held.kind == "test"
        return Receipt(
            status="success",
            timestamp=datetime.now(UTC),
            reference=held.reference,
            method=built.wire_name if built else (TEST_METHOD if test else held.kind),
            extra={"note": "test money: nothing was paid"} if test else None,
        )

    def _authorization(self, row: Payment, receipt: Receipt, *, redeemed: bool) -> Authorization:
        return Authorization(
            self.ledger,
            row,
            receipt,
            redeemed=redeemed,
            credit_ttl=self.credit_ttl,
            scrub=self._scrub,
        )

    # ---------------------------------------------------------------- refusals

    def _challenge(
        self, req: PaidRequest, error: PaymentError | None, *, detail: str | None = None
    ) -> Problem:
        """402 with one fresh challenge per acceptable offer, saying why when `error` is set."""
        offers = req.offers
        order = offers.acceptable(req.accept)
        if not order:
            return refusals.unsupported(offers.offered(), None)
        challenges = offers.challenges(order, req.scope)
        if error is None:
            return offers.required.with_headers(*challenges)
        return refusals.payment_refused(error, self._scrub(detail or str(error)), challenges)

    def _refuse(self, req: PaidRequest, error: PaymentError | Unsupported) -> Problem:
        """The problem for a refused credential: 402 + fresh challenges, or pympp's 400/403."""
        if isinstance(error, Unsupported):
            return refusals.unsupported(req.offers.offered(), error.method)
        if error.status == 402:
            return self._challenge(req, error)
        return refusals.final_refusal(error, self._scrub)


# ------------------------------------------------------------------------------ helpers


def new_row(
    req: PaidRequest, key: str, checked: Checked, owner: str, lease_until: float
) -> Payment:
    """The in-flight claim a new credential starts as."""
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
        status=PaymentStatus.IN_FLIGHT,
        owner=owner,
        lease_until=lease_until,
        credit_until=0.0,
        attempts=1,
        created_at=now,
        updated_at=now,
    )


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


async def _verify_and_settle(checked: Checked, row: Payment) -> Receipt:
    """pympp's verify-and-settle; a replay of a payment our dead predecessor settled is found
    on chain (attempts > 1) rather than lost."""
    offer = checked.offer
    context = VerifyContext(
        credential=checked.credential, request=dict(offer.input), challenge=checked.challenge
    )
    try:
        receipt, _ = await offer.built.server.settle(context)
    except CredentialReplayedError:
        found = None
        if row.attempts > 1 and offer.built.recover is not None:
            found = await offer.built.recover(checked.credential, checked.challenge)
        if found is None:
            raise
        receipt = found
    result: Receipt = receipt
    return result


async def _credit_when_done(task: asyncio.Future[Decision]) -> None:
    with contextlib.suppress(Exception):
        result = await task
        if isinstance(result, Authorization):
            await result.credit(NotDelivered("cancelled", 502))


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__
    return type(exc).__name__ + (f" from {type(cause).__name__}" if cause is not None else "")
