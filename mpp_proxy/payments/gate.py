"""PaymentGate: per paid request a 402 challenge, a refusal, or an Authorization kept in the ledger.

One ledger row per credential (key = SHA-256 of the credential token):

    unknown --pympp verifies and settles--> in_flight --delivered()--> delivered (final: 403)
    in_flight --credit()--> credited --same credential and request, in time--> in_flight
    credited --credit_until passed--> forfeited (final: 403)
    in_flight whose lease expired (its process died) is taken over by the next presenter.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import socket
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from mpp import Challenge, Credential, Receipt
from mpp._parsing import MAX_AUTHORIZATION_SIZE, ParseError
from mpp.errors import (
    CredentialReplayedError,
    InternalPaymentError,
    InvalidChallengeError,
    InvalidPayloadError,
    MalformedCredentialError,
    PaymentError,
    PaymentExpiredError,
    PaymentOutcomeUnknownError,
)
from mpp.server.compose import ComposedHandler
from mpp.server.method import RequestContext, VerifyContext
from mpp.server.mpp import Mpp
from mpp.server.verify import _application_meta, _authenticate_echo, _challenge_from_echo
from pydantic import ValidationError

from mpp_proxy.config.errors import ConfigError
from mpp_proxy.config.model import BasicAuth, BearerAuth, Config, HeaderAuth, Route, Service
from mpp_proxy.payments.accept import rank
from mpp_proxy.payments.challenges import ChallengeMint, Expiry, scope_dict, scope_json
from mpp_proxy.payments.methods import BuiltMethod, build_method
from mpp_proxy.payments.testmoney import METHOD_NAME as TEST_METHOD
from mpp_proxy.problems import PAYMENT_TYPE, Problem, problem
from mpp_proxy.state.base import Payment, PaymentStatus, Store

__all__ = ["Authorization", "Denial", "PaidRequest", "PaymentGate"]

log = logging.getLogger("mpp_proxy.payments")

Headers = tuple[tuple[bytes, bytes], ...]
_NO_STORE = (b"cache-control", b"no-store")
_UPSTREAM_BODY_LIMIT = 64 * 1024
_STRIPE_KEY = re.compile(r"\b(?:sk|rk)_(?:live|test)_[A-Za-z0-9]+")
_IN_FLIGHT = (PaymentStatus.IN_FLIGHT,)
_CREDITED = (PaymentStatus.CREDITED,)


@dataclass(frozen=True, slots=True)
class PaidRequest:
    """What the gate needs from one request to a paid route."""

    service: Service
    route: Route
    method: str  # upper-case HTTP method
    path: str  # raw path as the app sees it, "/openai/v1/chat/completions"
    query: str  # raw query string, "" when none
    headers: Sequence[tuple[bytes, bytes]]  # lower-case names
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class Denial:
    """A complete refusal (402/400/403/409/500 problem+json) the core sends as it is."""

    status: int
    headers: Headers
    body: bytes
    slug: str = ""  # the problem's short name, for logs and metrics


# ------------------------------------------------------------------------------ plans


@dataclass(frozen=True, slots=True)
class _Offer:
    """One method offered on one route: pympp's resolved input, the wire request, its mint."""

    built: BuiltMethod
    input: dict[str, Any]  # resolved route input (what pympp hands to verify as `request`)
    wire: dict[str, Any]  # the challenge request without `_mppx_scope`
    mint: ChallengeMint
    amount: str  # base units

    @property
    def key(self) -> tuple[str, str]:
        return (self.built.wire_name, self.built.intent)


@dataclass(frozen=True, slots=True)
class _RoutePlan:
    service_id: str
    route_key: str
    offers: tuple[_Offer, ...]
    keys: tuple[tuple[str, str], ...]
    by_key: dict[tuple[str, str], tuple[_Offer, ...]]
    required: Denial  # the static part of the plain 402 (headers without challenges)
    handler: ComposedHandler  # pympp's own per-route handler (benchmarks, compatibility)


def _display(amount: Decimal) -> str:
    return format(amount, "f")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _denial(p: Problem, slug: str, headers: Headers = ()) -> Denial:
    return Denial(p.status, (*p.headers, _NO_STORE, *headers), p.body, slug)


# ------------------------------------------------------------------------------ results


class Authorization:
    """A paid request may proceed. Exactly one of `delivered()` / `credit()` must follow."""

    __slots__ = ("_done", "_gate", "payment", "receipt_headers", "redeemed")

    def __init__(
        self, gate: PaymentGate, payment: Payment, receipt: Receipt, *, redeemed: bool
    ) -> None:
        self._gate = gate
        self._done = False
        self.payment = payment
        # True when this request spends an earlier credit instead of a new payment.
        self.redeemed = redeemed
        self.receipt_headers: Headers = (
            (b"payment-receipt", receipt.to_payment_receipt().encode("ascii")),
            (b"cache-control", b"private"),
        )

    @property
    def reference(self) -> str:
        return self.payment.reference

    async def delivered(self) -> None:
        """The upstream answered with success and the whole body reached the client."""
        if self._done:
            return
        self._done = True
        await self._gate._finish(self.payment.key, PaymentStatus.DELIVERED, {})

    async def credit(
        self, reason: str, upstream_status: int | None = None, upstream_body: bytes = b""
    ) -> Problem:
        """Keep the payment as a credit and return the problem that tells the client to retry.

        Status: the upstream's own status when it answered with 4xx/5xx; otherwise 504 for a
        timeout, 400 for a request that could not be forwarded, else 502.
        """
        gate = self._gate
        until = time.time() + gate.credit_ttl
        if not self._done:
            self._done = True
            await gate._finish(self.payment.key, PaymentStatus.CREDITED, {"credit_until": until})
        return gate._credit_problem(self.payment, reason, upstream_status, upstream_body, until)


# ------------------------------------------------------------------------------ the gate


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
        self.credit_ttl = float(config.proxy.credit_ttl)
        self.lease_seconds = float(config.proxy.lease_seconds)
        self.owner = owner or process_owner()
        self._secret = secret.value
        self._expiry = Expiry(float(config.proxy.challenge_ttl))
        self._methods: dict[str, BuiltMethod] = {}
        self._plans: dict[tuple[str, str], _RoutePlan] = {}
        self._pending: dict[str, tuple[PaymentStatus, dict[str, Any]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._jobs: set[asyncio.Future[Any]] = set()
        paid = [(s, r) for s in config.services for r in s.routes if r.price is not None]
        used = {name for _, r in paid if r.price is not None for name in r.price.pay_with}
        for method in config.methods:
            if method.name in used:
                self._methods[method.name] = build_method(
                    method, store, allow_test=config.proxy.allow_test_payments
                )
        self.mpp = Mpp(
            methods=[m.server for m in self._methods.values()] or _placeholder(store),
            realm=self.realm,
            secret_key=self._secret,
            store=store,
        )
        self._secrets = self._collect_secrets(config)
        for service, route in paid:
            self._plans[(service.id, route.key)] = self._plan(service, route)

    # ---------------------------------------------------------------- construction

    def _collect_secrets(self, config: Config) -> tuple[str, ...]:
        found = [self._secret]
        for m in self._methods.values():
            found.extend(m.secrets)
        for service in config.services:
            auth = service.auth
            if isinstance(auth, BearerAuth):
                found.append(auth.token.value)
            elif isinstance(auth, HeaderAuth):
                found.append(auth.value.value)
            elif isinstance(auth, BasicAuth):
                found.extend((auth.username.value, auth.password.value))
        return tuple(sorted({s for s in found if len(s) >= 4}, key=len, reverse=True))

    def _plan(self, service: Service, route: Route) -> _RoutePlan:
        price = route.price
        assert price is not None
        where = f"route {route.key!r} of service {service.id!r}"
        offers: list[_Offer] = []
        pympp_entries: list[tuple[Any, dict[str, Any]]] = []
        for name in price.pay_with:
            built = self._methods.get(name)
            if built is None:
                raise ConfigError(f"{where} is paid with unknown method {name!r}")
            options: dict[str, Any] = {"amount": _display(price.amount), **built.route_options}
            try:
                resolved, wire = _resolve(built, options, self._expiry.ttl)
            except (ValueError, TypeError, ValidationError) as exc:
                raise ConfigError(
                    f"{where}: price {_display(price.amount)} cannot be charged with {name!r}: "
                    f"{_first_line(exc)}"
                ) from None
            mint = ChallengeMint(
                secret_key=self._secret,
                realm=self.realm,
                method=built.wire_name,
                intent=built.intent,
                wire=wire,
                description=route.description or None,
            )
            offers.append(_Offer(built, resolved, wire, mint, str(wire.get("amount", ""))))
            pympp_options = dict(options)
            pympp_options["expires_in"] = timedelta(seconds=self._expiry.ttl)
            if route.description:
                pympp_options["description"] = route.description
            pympp_entries.append((built.server, pympp_options))
        by_key: dict[tuple[str, str], tuple[_Offer, ...]] = {}
        for offer in offers:
            by_key[offer.key] = (*by_key.get(offer.key, ()), offer)
        what = route.description or f"{route.method} /{service.id}{route.pattern}"
        required = _denial(
            problem(
                402,
                "payment-required",
                "Payment Required",
                f"{what} costs {_display(price.amount)}; pay one of the offers in the "
                "WWW-Authenticate headers and retry with the credential.",
                base=PAYMENT_TYPE,
            ),
            "payment-required",
        )
        return _RoutePlan(
            service_id=service.id,
            route_key=route.key,
            offers=tuple(offers),
            keys=tuple(o.key for o in offers),
            by_key=by_key,
            required=required,
            handler=self.mpp.compose(*pympp_entries),
        )

    def plan_for(self, service: Service, route: Route) -> _RoutePlan:
        plan = self._plans.get((service.id, route.key))
        if plan is None:
            plan = self._plans[(service.id, route.key)] = self._plan(service, route)
        return plan

    def pympp_handler(self, service: Service, route: Route) -> ComposedHandler:
        """pympp's own handler for the route (same methods and price), for comparisons."""
        return self.plan_for(service, route).handler

    # ---------------------------------------------------------------- lifespan

    async def start(self) -> None:
        """Sweep abandoned claims once, then keep this instance's leases alive."""
        if self._task is not None:
            return
        await self._sweep()
        self._task = asyncio.create_task(self._maintain(), name="mpp-proxy payment leases")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._jobs:
            await asyncio.gather(*self._jobs, return_exceptions=True)
        await self._retry_pending()
        for built in self._methods.values():
            with contextlib.suppress(Exception):
                await built.close()

    async def _maintain(self) -> None:
        tick = max(0.05, self.lease_seconds / 3)
        sweep_every = max(tick, min(30.0, self.credit_ttl / 4))
        next_sweep = time.monotonic() + sweep_every
        while True:
            await asyncio.sleep(tick)
            try:
                await self.store.renew_leases(self.owner, time.time() + self.lease_seconds)
                await self._retry_pending()
                if time.monotonic() >= next_sweep:
                    next_sweep = time.monotonic() + sweep_every
                    await self._sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("payment lease upkeep failed: %s", type(exc).__name__)

    async def _sweep(self) -> None:
        now = time.time()
        try:
            await self.store.forfeit_expired_credits(now)
            await self.store.credit_abandoned(now, now + self.credit_ttl)
        except Exception as exc:
            log.warning("payment ledger sweep failed: %s", type(exc).__name__)

    async def _retry_pending(self) -> None:
        for key, (status, changes) in list(self._pending.items()):
            try:
                await self.store.transition(
                    key, expect=_IN_FLIGHT, status=status, expect_owner=self.owner, **changes
                )
            except Exception:
                continue
            self._pending.pop(key, None)

    async def _finish(self, key: str, status: PaymentStatus, changes: dict[str, Any]) -> None:
        try:
            row = await self.store.transition(
                key, expect=_IN_FLIGHT, status=status, expect_owner=self.owner, **changes
            )
        except asyncio.CancelledError:
            # The write may or may not have happened; the lease task makes sure it does.
            self._pending[key] = (status, changes)
            raise
        except Exception as exc:
            # Keep the outcome and retry from the lease task; the row stays claimed meanwhile.
            log.warning("ledger update to %s failed (%s); retrying", status, type(exc).__name__)
            self._pending[key] = (status, changes)
            return
        if row is None:
            log.warning("ledger row %s.. was no longer held by this process", key[:12])

    # ---------------------------------------------------------------- authorize

    async def authorize(self, req: PaidRequest) -> Authorization | Denial:
        """Decide one paid request. Never raises for a client's input or a backend failure."""
        plan = self.plan_for(req.service, req.route)
        credential, accept = _read_headers(req.headers)
        if credential is None:
            return self._challenge(plan, req, accept, None)
        # From the first ledger write on, the decision runs in a task the request cannot cancel:
        # a claim written (or a payment settled) just before the client went away or the server
        # began shutting down must end as a credit, not as a row held by nobody.
        task = asyncio.ensure_future(self._decide(plan, req, credential, accept))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            self._background(self._credit_when_done(task))
            raise

    async def _decide(
        self, plan: _RoutePlan, req: PaidRequest, credential: str, accept: str | None
    ) -> Authorization | Denial:
        try:
            return await self._authorize(plan, req, credential, accept)
        except Exception as exc:
            log.warning("payment backend failure: %s", type(exc).__name__)
            return self._internal_error()

    async def _authorize(
        self, plan: _RoutePlan, req: PaidRequest, credential: str, accept: str | None
    ) -> Authorization | Denial:
        token = credential[8:].strip() if credential[:8].lower() == "payment " else credential
        if len(credential) > MAX_AUTHORIZATION_SIZE or not token:
            return self._refuse(plan, req, accept, MalformedCredentialError("empty or oversized"))
        key = hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()
        row = await self.store.get_payment(key)
        if row is not None:
            return await self._known(plan, req, accept, token, row)
        checked = self._check(plan, req, accept, token, allow_expired=False)
        if isinstance(checked, Denial):
            return checked
        offer, parsed, challenge = checked
        now = time.time()
        row = Payment(
            key=key,
            challenge_id=challenge.id,
            method=offer.built.name,
            kind=offer.built.config.kind,
            reference="",
            amount=offer.amount,
            currency=offer.built.currency,
            service=plan.service_id,
            route=plan.route_key,
            scope=_scope_text(req),
            payer=parsed.source or "",
            status=PaymentStatus.IN_FLIGHT,
            owner=self.owner,
            lease_until=now + self.lease_seconds,
            credit_until=0.0,
            attempts=1,
            created_at=now,
            updated_at=now,
        )
        existing = await self.store.insert_payment(row)
        if existing is not None:
            return await self._known(plan, req, accept, token, existing)
        return await self._settle(plan, req, accept, offer, parsed, challenge, row)

    async def _credit_when_done(self, task: asyncio.Future[Authorization | Denial]) -> None:
        with contextlib.suppress(Exception):
            result = await task
            if isinstance(result, Authorization):
                await result.credit("cancelled")

    def _background(self, coro: Any) -> None:
        job = asyncio.ensure_future(coro)
        self._jobs.add(job)
        job.add_done_callback(self._jobs.discard)

    async def _settle(
        self,
        plan: _RoutePlan,
        req: PaidRequest,
        accept: str | None,
        offer: _Offer,
        parsed: Credential,
        challenge: Challenge,
        row: Payment,
    ) -> Authorization | Denial:
        """Run pympp's verification and settlement for a row this process holds."""
        try:
            try:
                receipt, _ = await offer.built.server.settle(
                    VerifyContext(credential=parsed, request=dict(offer.input), challenge=challenge)
                )
            except CredentialReplayedError:
                # A claim taken over from a dead process (attempts > 1) may have settled
                # before it died: pympp's replay store then knows the payment, the ledger
                # does not. Find it on chain rather than lose it.
                found = None
                if row.attempts > 1 and offer.built.recover is not None:
                    found = await offer.built.recover(parsed, challenge)
                if found is None:
                    raise
                receipt = found
        except (InternalPaymentError, PaymentOutcomeUnknownError) as exc:
            await self._release(row.key)
            log.warning("payment backend failure (%s)", _cause(exc))
            return self._internal_error()
        except PaymentError as exc:
            await self._release(row.key)
            return self._refuse(plan, req, accept, exc)
        except Exception as exc:
            await self._release(row.key)
            log.warning("payment backend failure (%s)", type(exc).__name__)
            return self._internal_error()
        payer = receipt.payer or parsed.source or row.payer
        settled: dict[str, Any] = {"reference": receipt.reference, "payer": payer}
        try:
            held = await self.store.transition(
                row.key,
                expect=_IN_FLIGHT,
                status=PaymentStatus.IN_FLIGHT,
                expect_owner=self.owner,
                **settled,
            )
        except Exception as exc:
            # Paid, but the ledger did not take it: keep it as a credit once the store is back.
            log.warning(
                "recording a settled payment failed (%s); kept as a credit", type(exc).__name__
            )
            credit = {**settled, "credit_until": time.time() + self.credit_ttl}
            self._pending[row.key] = (PaymentStatus.CREDITED, credit)
            return self._internal_error()
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
            return self._in_progress()
        return Authorization(self, held, receipt, redeemed=False)

    async def _release(self, key: str) -> None:
        with contextlib.suppress(Exception):
            await self.store.delete_payment(key, expect_owner=self.owner)

    async def _known(
        self, plan: _RoutePlan, req: PaidRequest, accept: str | None, token: str, row: Payment
    ) -> Authorization | Denial:
        """A credential the ledger has seen: redeem, take over, or refuse it."""
        now = time.time()
        status = row.status
        if status is PaymentStatus.DELIVERED:
            return self._used("this credential was already used; pay again for a new request")
        if status is PaymentStatus.FORFEITED:
            return self._used(
                f"this credential's credit expired at {_iso(row.credit_until)} and was forfeited",
                slug="credit-forfeited",
            )
        if status is PaymentStatus.IN_FLIGHT and row.lease_until >= now:
            return self._in_progress()
        if row.scope != _scope_text(req):
            return self._challenge(
                plan,
                req,
                accept,
                InvalidChallengeError(None, "this credential was bought for another request"),
                detail=f"this credential pays for {row.scope}, not for {_scope_text(req)}",
            )
        if row.key in self._pending:
            # This process has not recorded how its last attempt ended: until it has, a new
            # claim could be overwritten by that late write while being served.
            return self._in_progress()
        if status is PaymentStatus.CREDITED:
            if row.credit_until < now:
                with contextlib.suppress(Exception):
                    await self.store.transition(
                        row.key, expect=_CREDITED, status=PaymentStatus.FORFEITED
                    )
                return self._used(
                    f"this credential's credit expired at {_iso(row.credit_until)}"
                    " and was forfeited",
                    slug="credit-forfeited",
                )
            held = await self.store.transition(
                row.key,
                expect=_CREDITED,
                status=PaymentStatus.IN_FLIGHT,
                owner=self.owner,
                lease_until=now + self.lease_seconds,
                credit_until=0.0,
                attempts=row.attempts + 1,
            )
        else:  # in flight, lease expired: its process died
            held = await self.store.transition(
                row.key,
                expect=_IN_FLIGHT,
                status=PaymentStatus.IN_FLIGHT,
                lease_expired_before=now,
                owner=self.owner,
                lease_until=now + self.lease_seconds,
                attempts=row.attempts + 1,
            )
        if held is None:
            again = await self.store.get_payment(row.key)
            if again is not None and again.status in (
                PaymentStatus.DELIVERED,
                PaymentStatus.FORFEITED,
            ):
                return await self._known(plan, req, accept, token, again)
            return self._in_progress()
        if not held.reference:
            # Claimed but never recorded as settled (the process died while settling):
            # let pympp decide again; its replay store refuses a payment that did land.
            checked = self._check(plan, req, accept, token, allow_expired=True)
            if isinstance(checked, Denial):
                await self._release(held.key)
                return checked
            offer, parsed, challenge = checked
            return await self._settle(plan, req, accept, offer, parsed, challenge, held)
        receipt = Receipt(
            status="success",
            timestamp=datetime.now(UTC),
            reference=held.reference,
            method=self._wire_name(held),
            extra={"note": "test money: nothing was paid"} if held.kind == "test" else None,
        )
        return Authorization(self, held, receipt, redeemed=True)

    def _wire_name(self, row: Payment) -> str:
        built = self._methods.get(row.method)
        if built is not None:
            return built.wire_name
        return TEST_METHOD if row.kind == "test" else row.kind

    def _check(
        self,
        plan: _RoutePlan,
        req: PaidRequest,
        accept: str | None,
        token: str,
        *,
        allow_expired: bool,
    ) -> tuple[_Offer, Credential, Challenge] | Denial:
        """Stateless checks, in pympp's order: parse, method, HMAC, realm, binding, expiry."""
        try:
            credential = Credential.from_authorization("Payment " + token)
        except ParseError as exc:
            return self._refuse(plan, req, accept, MalformedCredentialError(str(exc)))
        echo = credential.challenge
        offers = plan.by_key.get((echo.method, echo.intent))
        if not offers:
            return self._unsupported(plan, f"{echo.method}/{echo.intent}")
        try:
            echoed, opaque = _authenticate_echo(credential, secret_key=self._secret)
        except (MalformedCredentialError, InvalidChallengeError) as exc:
            if isinstance(exc, InvalidChallengeError):
                exc = InvalidChallengeError(
                    echo.id, "the challenge was not issued by this server or was altered"
                )
            return self._refuse(plan, req, accept, exc)
        if echo.realm != self.realm:
            return self._refuse(
                plan, req, accept, InvalidChallengeError(echo.id, "issued for another realm")
            )
        scope = scope_dict(req.method, req.path, req.query)
        echoed_scope = echoed.get("_mppx_scope")
        if echoed_scope != scope:
            where = _describe_scope(echoed_scope)
            return self._refuse(
                plan,
                req,
                accept,
                InvalidChallengeError(
                    echo.id,
                    f"the credential was bought for {where}, not for {_scope_text(req)}",
                ),
            )
        wire = {k: v for k, v in echoed.items() if k != "_mppx_scope"}
        offer = next((o for o in offers if o.wire == wire), None)
        if offer is None:
            return self._refuse(
                plan,
                req,
                accept,
                InvalidChallengeError(
                    echo.id,
                    "the credential pays other terms (amount, currency or recipient) than this "
                    "route asks now",
                ),
            )
        if _application_meta(opaque) is not None or echo.digest:
            return self._refuse(
                plan,
                req,
                accept,
                InvalidChallengeError(echo.id, "unexpected challenge binding"),
            )
        expires = _expires(echo.expires)
        if expires is None:
            return self._refuse(
                plan, req, accept, InvalidChallengeError(echo.id, "missing or invalid expires")
            )
        if not allow_expired and expires <= time.time():
            return self._refuse(plan, req, accept, PaymentExpiredError(echo.expires))
        try:
            payload = offer.built.server.method.parse_payload(credential.payload)
        except ValidationError as exc:
            return self._refuse(plan, req, accept, InvalidPayloadError(_first_line(exc)))
        challenge = _challenge_from_echo(echo, echoed, opaque)
        return offer, replace(credential, payload=payload), challenge

    # ---------------------------------------------------------------- responses

    def _challenge(
        self,
        plan: _RoutePlan,
        req: PaidRequest,
        accept: str | None,
        error: PaymentError | None,
        *,
        detail: str | None = None,
    ) -> Denial:
        """402 with one fresh challenge per acceptable offer, saying why when `error` is set."""
        order = rank(plan.keys, accept)
        if not order:
            return self._unsupported(plan, None)
        scope = scope_json(scope_dict(req.method, req.path, req.query))
        expires = self._expiry.now()
        offers = plan.offers
        challenges = tuple(
            (b"www-authenticate", offers[i].mint.issue(scope, expires).encode("latin-1"))
            for i in order
        )
        if error is None:
            base = plan.required
            return Denial(402, (*base.headers, *challenges), base.body, base.slug)
        slug = error.type.rsplit("/", 1)[-1]
        p = problem(
            402,
            slug,
            error.title,
            self._scrub(detail or str(error)),
            base=PAYMENT_TYPE,
            hint="pay one of the fresh challenges in the WWW-Authenticate headers",
        )
        return _denial(p, slug, challenges)

    def _refuse(
        self, plan: _RoutePlan, req: PaidRequest, accept: str | None, error: PaymentError
    ) -> Denial:
        """The problem for a refused credential: 402 + fresh challenges, or pympp's 400/403."""
        if error.status == 402:
            return self._challenge(plan, req, accept, error)
        if isinstance(error, (InternalPaymentError, PaymentOutcomeUnknownError)):
            return self._internal_error()
        slug = error.type.rsplit("/", 1)[-1]
        p = problem(error.status, slug, error.title, self._scrub(str(error)), base=PAYMENT_TYPE)
        return _denial(p, slug)

    def _unsupported(self, plan: _RoutePlan, method: str | None) -> Denial:
        offered = [f"{name}/{intent}" for name, intent in dict.fromkeys(plan.keys)]
        if method is None:
            detail = (
                "your Accept-Payment header excludes every payment method this route accepts: "
                + ", ".join(offered)
            )
        else:
            detail = f'payment method "{method}" is not accepted here; use ' + ", ".join(offered)
        p = problem(
            400,
            "method-unsupported",
            "Method Unsupported",
            detail,
            base=PAYMENT_TYPE,
            methods=offered,
        )
        return _denial(p, "method-unsupported")

    def _used(self, detail: str, slug: str = "credential-used") -> Denial:
        title = "Credit forfeited" if slug == "credit-forfeited" else "Credential already used"
        return _denial(problem(403, slug, title, detail), slug)

    def _in_progress(self) -> Denial:
        p = problem(
            409,
            "payment-in-progress",
            "Payment in progress",
            "another request with this credential is being served; wait for it to finish",
        )
        return _denial(p, "payment-in-progress")

    def _internal_error(self) -> Denial:
        p = problem(
            500,
            "internal-payment-error",
            "Internal Payment Error",
            "the payment backend failed; the payment may or may not have settled, so do not pay "
            "again blindly: retry later with the same credential",
            base=PAYMENT_TYPE,
        )
        return _denial(p, "internal-payment-error")

    def _credit_problem(
        self,
        payment: Payment,
        reason: str,
        upstream_status: int | None,
        upstream_body: bytes,
        until: float,
    ) -> Problem:
        if upstream_status is not None and 400 <= upstream_status <= 599:
            status = upstream_status
        elif reason == "upstream-timeout":
            status = 504
        elif reason == "bad-request":
            status = 400
        else:
            status = 502
        when = _iso(until)
        what = (
            f"the upstream answered {upstream_status}"
            if upstream_status is not None
            else f"the upstream request failed ({reason})"
        )
        extra: dict[str, Any] = {
            "reason": reason,
            "credit": {
                "until": when,
                "reference": payment.reference,
                "method": payment.method,
                "amount": payment.amount,
                "currency": payment.currency,
            },
        }
        if upstream_status is not None:
            extra["upstreamStatus"] = upstream_status
        text = _textual(upstream_body)
        if text is not None:
            extra["upstreamBody"] = self._scrub(text)
        p = problem(
            status,
            "payment-credited",
            "Upstream failed; payment kept as a credit",
            f"{what}. Your payment was kept as a credit: retry the same request with the same "
            f"credential before {when}; you will not be charged again.",
            **extra,
        )
        return Problem(p.status, (*p.headers, _NO_STORE), p.body)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, "***")
        return _STRIPE_KEY.sub("***", text)


# ------------------------------------------------------------------------------ helpers


_OWNERS: dict[int, str] = {}


def process_owner() -> str:
    """This process's lease owner id (host, pid, random), made after any fork."""
    pid = os.getpid()
    owner = _OWNERS.get(pid)
    if owner is None:
        owner = _OWNERS[pid] = f"{socket.gethostname()}:{pid}:{os.urandom(6).hex()}"
    return owner


def _placeholder(store: Store) -> Any:
    from mpp_proxy.payments import testmoney

    return testmoney.server_method(store=store)


def _resolve(
    built: BuiltMethod, options: dict[str, Any], challenge_ttl: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """pympp's offer preparation (compose._prepare_offer) without a request: input and wire."""
    from mpp._units import transform_units

    method = built.server
    data = {**(method.defaults or {}), **{k: v for k, v in options.items() if v is not None}}
    if method.resolve_request is not None:
        resolved = method.resolve_request(RequestContext(request=data))
        if isinstance(resolved, Awaitable):
            raise TypeError("asynchronous resolve_request is not supported")
        data = resolved
    wire = transform_units(method.method.normalize_request(data))
    if built.wire_name == "tempo":
        from mpp.methods.tempo.fee_payer_policy import MIN_REMAINING_VALIDITY_SECONDS
        from mpp.methods.tempo.schemas import reject_fixed_attribution_memos

        reject_fixed_attribution_memos(wire)
        details = wire.get("methodDetails")
        if (
            isinstance(details, dict)
            and details.get("feePayer")
            and (challenge_ttl < MIN_REMAINING_VALIDITY_SECONDS)
        ):
            raise ValueError(
                f"sponsored (fee payer) charges need challenge_ttl >= "
                f"{MIN_REMAINING_VALIDITY_SECONDS} s"
            )
    return data, wire


def _read_headers(headers: Sequence[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """(the Payment credential or None, the Accept-Payment value or None)."""
    credential: str | None = None
    dedicated: str | None = None
    accept: list[str] = []
    for name, value in headers:
        if name == b"authorization":
            text = value.decode("latin-1")
            for part in text.split(","):
                part = part.strip()
                if part[:8].lower() == "payment ":
                    credential = part
                    break
        elif name == b"payment-authorization":
            dedicated = value.decode("latin-1").strip()
        elif name == b"accept-payment":
            accept.append(value.decode("latin-1"))
    if dedicated:
        credential = dedicated
    return credential, (", ".join(accept) if accept else None)


def _scope_text(req: PaidRequest) -> str:
    return f"{req.method} {req.path}" + (f"?{req.query}" if req.query else "")


def _describe_scope(scope: Any) -> str:
    if not isinstance(scope, dict):
        return "a challenge without a route binding"
    text = f"{scope.get('http_method', '?')} {scope.get('resource', '?')}"
    if scope.get("query"):
        text += f"?{scope['query']}"
    return text


def _expires(value: str | None) -> float | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.timestamp()


def _textual(body: bytes) -> str | None:
    if not body or len(body) > _UPSTREAM_BODY_LIMIT:
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if any(ord(c) < 0x20 and c not in "\t\r\n" for c in text):
        return None
    return text


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _cause(exc: BaseException) -> str:
    cause = exc.__cause__
    return type(exc).__name__ + (f" from {type(cause).__name__}" if cause is not None else "")
