"""httpx transports that pay 402 challenges: PaymentTransport (sync) and AsyncPaymentTransport.

Both share one decision core: the request goes out with `Accept-Payment`; a 402 with Payment
challenges is checked against the SpendingGuard before anything is signed; the chosen method
signs; the request is sent again with the credential; the answer (and its Payment-Receipt) is
recorded. When the gateway keeps an undelivered payment as a credit (or answers 500: the payment
may have landed), the credential is kept, and the same request sent again (an SDK's retry)
presents it instead of paying twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

import httpx
import orjson
from mpp.runtime import ClientMethod, CredentialParams

from mpp_proxy.client.guard import SpendingGuard
from mpp_proxy.client.offers import Offer, parse_offers
from mpp_proxy.client.receipts import PaidCall, decode_receipt
from mpp_proxy.client.streams import draining, draining_async

__all__ = ["PAYMENT_EXTENSION", "AsyncPaymentTransport", "PaymentTransport"]

T = TypeVar("T")

# response.extensions[PAYMENT_EXTENSION] is the PaidCall of a paid response.
PAYMENT_EXTENSION = "mpp_proxy.payment"
_CREDENTIAL_HEADERS = ("authorization", "payment-authorization")
# How long a credential answered with a 500 stays worth presenting again (the gateway's
# credits last an hour by default; a credit problem says its own expiry).
_RETRY_WINDOW = 3600.0


@dataclass(frozen=True, slots=True)
class HttpKit:
    """The classes of one httpx flavour: `httpx` (pympp, plain clients) or `httpx2` (the OpenAI
    and Anthropic SDKs). A transport answers in the flavour of the client that calls it."""

    headers: Any
    request: Any
    response: Any
    byte_stream: Any
    transport: Any  # the default inner transports
    async_transport: Any
    sync_stream: Any  # the byte stream base classes a response body must be
    async_stream: Any


HTTPX = HttpKit(
    httpx.Headers,
    httpx.Request,
    httpx.Response,
    httpx.ByteStream,
    httpx.HTTPTransport,
    httpx.AsyncHTTPTransport,
    httpx.SyncByteStream,
    httpx.AsyncByteStream,
)


@dataclass(frozen=True, slots=True)
class _Plan:
    """How a 402 gets answered: a new payment (offer, method) or a kept credential."""

    offer: Offer | None
    method: ClientMethod | None
    kept: _Kept | None = None


@dataclass(frozen=True, slots=True)
class _Kept:
    """A credential the gateway said to present again (a credit, or a 500)."""

    credential: str
    header: str
    payment_method: str
    currency: str
    until: float


def _request_key(request: httpx.Request) -> str:
    body = hashlib.sha256(request.content).hexdigest()
    return f"{request.method} {request.url} {body}"


def _supplied(request: httpx.Request) -> bool:
    """The caller presents a credential of its own: send it as it is."""
    return any(
        request.headers.get(name, "").lower().startswith("payment ") for name in _CREDENTIAL_HEADERS
    )


def _until(problem: dict[str, Any]) -> float:
    credit = problem.get("credit")
    text = credit.get("until") if isinstance(credit, dict) else None
    if isinstance(text, str):
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    return time.time() + _RETRY_WINDOW


class _Core:
    """What both transports decide; no I/O here, except the signing coroutine it hands out."""

    def __init__(
        self,
        methods: Sequence[ClientMethod],
        guard: SpendingGuard,
        on_payment: Callable[[PaidCall], None] | None,
        kit: HttpKit,
    ) -> None:
        if not methods:
            raise ValueError("a payment transport needs at least one payment method")
        self.methods = list(methods)
        self.guard = guard
        self.on_payment = on_payment
        self.kit = kit
        self.payments: list[PaidCall] = []
        self._kept: dict[str, _Kept] = {}
        self._lock = threading.Lock()
        self.accept = ", ".join(dict.fromkeys(m.key for m in self.methods))

    def prepare(self, request: httpx.Request) -> None:
        if "accept-payment" not in request.headers:
            request.headers["Accept-Payment"] = self.accept

    def plan(self, request: httpx.Request, response: httpx.Response) -> _Plan | None:
        """How to answer this 402; None when it is not an MPP challenge (passed through)."""
        with self._lock:
            kept = self._kept.get(_request_key(request))
            if kept is not None and kept.until <= time.time():
                del self._kept[_request_key(request)]
                kept = None
        if kept is not None:
            return _Plan(None, None, kept)
        offers = parse_offers(response.headers.get_list("www-authenticate"))
        if not offers:
            return None
        offer, method = self.guard.choose(offers, self.methods, str(request.url))
        return _Plan(offer, method)

    async def signing(self, plan: _Plan) -> str:
        assert plan.method is not None and plan.offer is not None
        return await plan.method.create_credential(CredentialParams(challenge=plan.offer.challenge))

    def retry(self, request: Any, plan: _Plan, credential: str) -> Any:
        header = (
            plan.kept.header
            if plan.kept is not None
            else str(plan.offer.challenge.credential_header if plan.offer else "Authorization")
        )
        headers = self.kit.headers(request.headers)
        for name in _CREDENTIAL_HEADERS:
            value = headers.get(name)
            if value is not None and value.lower().startswith("payment "):
                del headers[name]
        headers[header] = credential
        return self.kit.request(
            request.method,
            request.url,
            headers=headers,
            content=request.content,
            extensions=request.extensions,
        )

    def needs_body(self, response: httpx.Response) -> bool:
        """A failed paid response small enough to read: it may say the payment is a credit."""
        kind = response.headers.get("content-type", "")
        return not response.is_success and "problem+json" in kind

    def record(
        self,
        request: httpx.Request,
        plan: _Plan,
        credential: str,
        response: httpx.Response,
        body: bytes | None,
    ) -> PaidCall:
        key = _request_key(request)
        problem = _problem(response, body)
        kept: _Kept | None = plan.kept
        if plan.offer is not None:
            kept = _Kept(
                credential,
                str(plan.offer.challenge.credential_header),
                plan.offer.method,
                plan.offer.label,
                0.0,
            )
        assert kept is not None
        with self._lock:
            if _keep(response, problem):
                self._kept[key] = _Kept(
                    kept.credential,
                    kept.header,
                    kept.payment_method,
                    kept.currency,
                    _until(problem),
                )
            else:
                self._kept.pop(key, None)
        call = PaidCall(
            method=request.method,
            url=str(request.url),
            payment_method=kept.payment_method,
            amount=plan.offer.amount if plan.offer is not None else Decimal(0),
            currency=kept.currency,
            status=response.status_code,
            receipt=decode_receipt(response.headers.get("payment-receipt")),
            credential=credential,
            redeemed=plan.offer is None,
        )
        with self._lock:
            self.payments.append(call)
        response.extensions = {**response.extensions, PAYMENT_EXTENSION: call}
        if self.on_payment is not None:
            self.on_payment(call)
        return call

    def redeem_failed(self, request: httpx.Request, response: httpx.Response) -> bool:
        """A kept credential refused (credit forfeited, already used): forget it, pay anew."""
        if response.status_code in (402, 403):
            with self._lock:
                self._kept.pop(_request_key(request), None)
            return True
        return False


def _problem(response: httpx.Response, body: bytes | None) -> dict[str, Any]:
    if body is None or response.headers.get("content-encoding", "identity") != "identity":
        return {}
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _keep(response: httpx.Response, problem: dict[str, Any]) -> bool:
    """The gateway says this credential is still worth something: a credit, a payment it did
    not settle (the credential stays valid), or a 500."""
    kind = str(problem.get("type", ""))
    if kind.endswith(("/payment-credited", "/payment-not-charged")):
        return True
    return response.status_code == 500 and kind.endswith("/internal-payment-error")


def _rebuilt(kit: HttpKit, response: Any, raw: bytes) -> Any:
    """The same response with its (already read) raw body, readable again by the caller."""
    return kit.response(
        response.status_code,
        headers=response.headers,
        stream=kit.byte_stream(raw),
        extensions=response.extensions,
    )


class _LoopThread:
    """An event loop on a thread of its own, for the async signing of pympp's client methods.

    The sync transport may be called from a thread that already runs a loop (a notebook, an
    async app calling the sync SDK): signing there with asyncio.run would fail.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="mpp-proxy-client-signer", daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            loop = self._loop
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def close(self) -> None:
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
            loop.close()


def _guard(
    guard: SpendingGuard | None,
    max_amount: str | Decimal | None,
    budget: str | Decimal | None,
    allow_hosts: Sequence[str] | None,
) -> SpendingGuard:
    if guard is not None:
        if max_amount is not None or budget is not None or allow_hosts is not None:
            raise TypeError("pass either guard= or max_amount/budget/allow_hosts, not both")
        return guard
    if max_amount is None:
        raise TypeError("max_amount is required: the most one call may pay, e.g. '0.10'")
    return SpendingGuard(max_amount=max_amount, budget=budget, allow_hosts=allow_hosts)


class _Paying:
    """What both transports hold: the decision core over one guard, and the inner transport."""

    kit: HttpKit = HTTPX

    def __init__(
        self,
        methods: Sequence[ClientMethod],
        *,
        max_amount: str | Decimal | None = None,
        budget: str | Decimal | None = None,
        allow_hosts: Sequence[str] | None = None,
        guard: SpendingGuard | None = None,
        on_payment: Callable[[PaidCall], None] | None = None,
        inner: Any = None,
    ) -> None:
        guarded = _guard(guard, max_amount, budget, allow_hosts)
        self._core = _Core(methods, guarded, on_payment, self.kit)
        self._inner = inner if inner is not None else self._default_inner()
        # The sync transport signs on it; it starts its thread on first use only.
        self._signer = _LoopThread()

    def _default_inner(self) -> Any:
        raise NotImplementedError

    @property
    def guard(self) -> SpendingGuard:
        return self._core.guard

    @property
    def payments(self) -> list[PaidCall]:
        return list(self._core.payments)


class SyncPaying(_Paying):
    """The sync transport's behaviour, for httpx's and httpx2's BaseTransport alike."""

    def _default_inner(self) -> Any:
        return self.kit.transport()

    def handle_request(self, request: Any) -> Any:
        if _supplied(request):
            return self._inner.handle_request(request)
        self._core.prepare(request)
        request.read()  # a paid retry sends the same body again
        response = self._inner.handle_request(request)
        if response.status_code != 402:
            return response
        plan = self._core.plan(request, response)
        if plan is None:
            return response
        response.read()
        response.close()
        if plan.kept is not None:
            paid = self._present(request, plan, plan.kept.credential)
            if not self._core.redeem_failed(request, paid):
                return paid
            paid.close()
            return self.handle_request(request)
        try:
            credential = self._signer.run(self._core.signing(plan))
        except BaseException:
            assert plan.offer is not None
            self._core.guard.release(plan.offer)
            raise
        return self._present(request, plan, credential)

    def _present(self, request: Any, plan: _Plan, credential: str) -> Any:
        response = self._inner.handle_request(self._core.retry(request, plan, credential))
        body = None
        if self._core.needs_body(response):
            body = b"".join(response.iter_raw())
            response = _rebuilt(self._core.kit, response, body)
        elif response.is_success:
            response.stream = draining(self._core.kit.sync_stream, response.stream)
        self._core.record(request, plan, credential, response, body)
        return response

    def close(self) -> None:
        self._signer.close()
        self._inner.close()


class AsyncPaying(_Paying):
    """The async transport's behaviour, for httpx's and httpx2's AsyncBaseTransport alike.
    Signing runs on the caller's event loop."""

    def _default_inner(self) -> Any:
        return self.kit.async_transport()

    async def handle_async_request(self, request: Any) -> Any:
        if _supplied(request):
            return await self._inner.handle_async_request(request)
        self._core.prepare(request)
        await request.aread()
        response = await self._inner.handle_async_request(request)
        if response.status_code != 402:
            return response
        plan = self._core.plan(request, response)
        if plan is None:
            return response
        await response.aread()
        await response.aclose()
        if plan.kept is not None:
            paid = await self._present(request, plan, plan.kept.credential)
            if not self._core.redeem_failed(request, paid):
                return paid
            await paid.aclose()
            return await self.handle_async_request(request)
        try:
            credential = await self._core.signing(plan)
        except BaseException:
            assert plan.offer is not None
            self._core.guard.release(plan.offer)
            raise
        return await self._present(request, plan, credential)

    async def _present(self, request: Any, plan: _Plan, credential: str) -> Any:
        response = await self._inner.handle_async_request(
            self._core.retry(request, plan, credential)
        )
        body = None
        if self._core.needs_body(response):
            body = b"".join([chunk async for chunk in response.aiter_raw()])
            response = _rebuilt(self._core.kit, response, body)
        elif response.is_success:
            response.stream = draining_async(self._core.kit.async_stream, response.stream)
        self._core.record(request, plan, credential, response, body)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


class PaymentTransport(SyncPaying, httpx.BaseTransport):
    """A sync httpx transport that pays 402 challenges within its spending guard.

        transport = PaymentTransport([test_money()], max_amount="0.10", budget="1.00")
        with httpx.Client(transport=transport) as client:
            client.get("http://127.0.0.1:4402/weather/v1/forecast/oslo")
        transport.payments[-1].receipt.reference

    `methods` are pympp client methods (`test_money()`, `tempo(key)`, or any other, such as
    pympp's Stripe and EVM clients). `max_amount` caps one payment, `budget` them all,
    `allow_hosts` says whom to pay (or pass a SpendingGuard as `guard`). A refused payment
    raises PaymentRefused before anything is signed. Each paid response carries its PaidCall
    in `response.extensions["mpp_proxy.payment"]`; `payments` lists them all and `on_payment`
    is called with each. For httpx2 clients (the OpenAI and Anthropic SDKs) use
    `mpp_proxy.client.httpx2.PaymentTransport`.
    """

    kit = HTTPX


class AsyncPaymentTransport(AsyncPaying, httpx.AsyncBaseTransport):
    """The async twin of PaymentTransport (same arguments), for httpx.AsyncClient."""

    kit = HTTPX
