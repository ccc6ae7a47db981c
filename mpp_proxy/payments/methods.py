"""Configured payment methods -> pympp server methods (tempo, stripe, evm, test money)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from mpp_proxy.config.errors import ConfigError
from mpp_proxy.config.model import (
    EvmMethod,
    PaymentMethod,
    StripeMethod,
    TempoMethod,
    TestMoneyMethod,
)
from mpp_proxy.payments import pympp, testmoney
from mpp_proxy.payments.pympp import PymppStore as Store
from mpp_proxy.payments.pympp import ServerMethod

STRIPE_DEFAULT_BASE = "https://api.stripe.com"
# (settled reference, idempotency key) -> the refund's id; raises when it was refused.
Refunder = Callable[[str, str], Awaitable[str]]
_TIMEOUT = 30.0


@dataclass(slots=True)
class BuiltMethod:
    """One operator method ready for pympp: its server method and what the ledger records."""

    config: PaymentMethod
    server: ServerMethod
    currency: str  # what the ledger and receipts name: token address, "usd", "TEST"
    decimals: int
    # Route input every route adds for this method (such as Tempo's fee sponsorship).
    route_options: dict[str, Any] = field(default_factory=dict)
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    secrets: tuple[str, ...] = ()
    # Finds a payment that settled although pympp now calls its credential a replay (the
    # process settling it died before recording it): (parsed credential, challenge) -> receipt.
    recover: Callable[[Any, Any], Awaitable[Any | None]] | None = None
    # Gives a settled payment back: (reference, idempotency key) -> the refund's id.
    refund: Refunder | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def wire_name(self) -> str:
        return self.server.name

    @property
    def intent(self) -> str:
        return self.server.intent

    async def close(self) -> None:
        for closer in self.closers:
            await closer()


class _Rebased(httpx.AsyncBaseTransport):
    """Sends requests pympp addresses to api.stripe.com to the configured API base instead."""

    def __init__(self, base: str) -> None:
        self._base = httpx.URL(base)
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.host == "api.stripe.com":
            prefix = self._base.raw_path.rstrip(b"/")
            request.url = url.copy_with(
                scheme=self._base.scheme,
                host=self._base.host,
                port=self._base.port,
                raw_path=prefix + url.raw_path,
            )
            request.headers["host"] = request.url.netloc.decode("ascii")
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


class _SyncSendCompat(httpx.AsyncBaseTransport):
    """Tempo RPC: resend `eth_sendRawTransactionSync` with the raw transaction alone when the node
    rejects pympp's second parameter (the timeout) as invalid params, as anvil does.

    Safe for any node: -32602 (invalid params) is answered before anything is broadcast.
    """

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = request.content
        if b"eth_sendRawTransactionSync" not in body:
            return await self._inner.handle_async_request(request)
        response = await self._inner.handle_async_request(request)
        try:
            call = json.loads(body)
            params = call["params"]
            if call.get("method") != "eth_sendRawTransactionSync" or len(params) < 2:
                return response
            await response.aread()
            answer = json.loads(response.content)
            if not isinstance(answer, dict) or answer.get("error", {}).get("code") != -32602:
                return response
        except (ValueError, KeyError, TypeError, AttributeError):
            return response
        retry = httpx.Request(
            request.method,
            request.url,
            headers=[(k, v) for k, v in request.headers.raw if k.lower() != b"content-length"],
            content=json.dumps({**call, "params": params[:1]}).encode(),
        )
        return await self._inner.handle_async_request(retry)

    async def aclose(self) -> None:
        await self._inner.aclose()


def build_method(method: PaymentMethod, store: Store, *, allow_test: bool) -> BuiltMethod:
    """Build one configured method; raises ConfigError when pympp refuses its settings."""
    try:
        if isinstance(method, TestMoneyMethod):
            return _test(method, store, allow_test)
        if isinstance(method, TempoMethod):
            return _tempo(method, store)
        if isinstance(method, StripeMethod):
            return _stripe(method)
        if isinstance(method, EvmMethod):
            return _evm(method, store)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        for hidden in _secret_values(method):
            text = text.replace(hidden, "***")
        raise ConfigError(
            f"payment method {method.name!r} ({method.kind}) is not usable: {text}",
            key=f"methods.{method.name}",
        ) from None
    raise ConfigError(f"unknown payment method kind {method.kind!r}", key=f"methods.{method.name}")


def _secret_values(method: PaymentMethod) -> list[str]:
    values: list[str] = []
    if isinstance(method, StripeMethod):
        values.append(method.secret_key.value)
    if isinstance(method, TempoMethod) and method.fee_payer_key is not None:
        values.append(method.fee_payer_key.value)
    return [v for v in values if v]


def _test(method: TestMoneyMethod, store: Store, allow_test: bool) -> BuiltMethod:
    if not allow_test:
        raise ConfigError(
            f"payment method {method.name!r} is test money; it needs allow_test_payments = true",
            key=f"methods.{method.name}",
        )
    server = testmoney.server_method(
        currency=method.currency, decimals=method.decimals, store=store
    )
    return BuiltMethod(method, server, method.currency, method.decimals)


def _tempo(method: TempoMethod, store: Store) -> BuiltMethod:
    tempo = pympp.tempo_server()
    fee_payer = None
    secrets: tuple[str, ...] = ()
    if method.fee_payer_key is not None:
        try:
            fee_payer = pympp.tempo_account().from_key(method.fee_payer_key.value)
        except Exception:
            raise ConfigError(
                f"payment method {method.name!r}: fee_payer_key is not a valid private key",
                key=f"methods.{method.name}.fee_payer_key",
            ) from None
        secrets = (method.fee_payer_key.value,)
    client = httpx.AsyncClient(timeout=_TIMEOUT, transport=_SyncSendCompat())
    options: dict[str, Any] = {
        "recipient": method.recipient,
        "chain_id": method.chain_id,
        "currencies": [method.currency],
        "decimals": method.decimals,
        "fee_payer": fee_payer,
        "store": store,
        "http_client": client,
    }
    if method.rpc_url:
        options["rpc_url"] = method.rpc_url
    servers = tempo.charge(**options)
    return BuiltMethod(
        method,
        servers[0],
        method.currency,
        method.decimals,
        route_options={"fee_payer": True} if fee_payer is not None else {},
        closers=[client.aclose],
        secrets=secrets,
        recover=None if fee_payer is not None else _tempo_recovery(method, client),
    )


def _tempo_recovery(
    method: TempoMethod, client: httpx.AsyncClient
) -> Callable[[Any, Any], Awaitable[Any | None]]:
    """Look the credential's own transaction up on chain and verify it paid this challenge.

    Unsponsored only: a sponsored transaction is re-signed by the fee payer, its hash is not in
    the credential (pympp reconciles those itself through its broadcast marker).
    """
    resolve, charge_intent, canonical_raw, raw_hash, charge_request = pympp.tempo_recovery_parts()
    resolved = resolve(
        chain_id=method.chain_id,
        rpc_url=method.rpc_url,
        currencies=[method.currency],
        recipient=method.recipient,
        decimals=method.decimals,
    )
    intent = charge_intent(rpc_url=resolved.rpc_url, http_client=client, timeout=_TIMEOUT)

    async def recover(credential: Any, challenge: Any) -> Any | None:
        payload = getattr(credential.payload, "root", credential.payload)
        if getattr(payload, "type", None) == "hash":
            tx_hash = str(payload.hash)
        else:
            raw = canonical_raw(str(payload.signature))
            tx_hash = raw_hash(raw)
        found = await intent._get_transaction_receipt(client, tx_hash)
        if not found:
            return None
        request = charge_request.model_validate(challenge.request)
        return intent._verify_recovered_receipt(
            found, tx_hash, request, challenge_id=challenge.id, realm=challenge.realm
        )

    return recover


def _stripe(method: StripeMethod) -> BuiltMethod:
    stripe = pympp.stripe_server()
    base = method.api_base.rstrip("/")
    transport: httpx.AsyncBaseTransport | None = (
        None if base == STRIPE_DEFAULT_BASE else _Rebased(base)
    )
    client = httpx.AsyncClient(timeout=_TIMEOUT, transport=transport)
    server = stripe.charge(
        network_id=method.network_id,
        secret_key=method.secret_key.value,
        payment_method_types=list(method.payment_method_types),
        currency=method.currency,
        decimals=method.decimals,
        http_client=client,
        timeout=_TIMEOUT,
    )
    return BuiltMethod(
        method,
        server,
        method.currency,
        method.decimals,
        closers=[client.aclose],
        secrets=(method.secret_key.value,),
        refund=_stripe_refunder(client, method.secret_key.value),
    )


def _stripe_refunder(client: httpx.AsyncClient, secret_key: str) -> Refunder:
    """Refunds through Stripe's Refunds API; the idempotency key makes a retried call answer
    the first refund instead of making another."""

    async def refund(reference: str, key: str) -> str:
        response = await client.post(
            f"{STRIPE_DEFAULT_BASE}/v1/refunds",
            data={"payment_intent": reference},
            auth=(secret_key, ""),
            headers={"idempotency-key": f"mpp-proxy-refund-{key}"},
        )
        doc = response.json()
        if response.status_code != 200 or not isinstance(doc, dict) or not doc.get("id"):
            error = doc.get("error", {}) if isinstance(doc, dict) else {}
            raise RuntimeError(
                f"Stripe refused the refund ({response.status_code}: {error.get('type')})"
            )
        return str(doc["id"])

    return refund


def _evm(method: EvmMethod, store: Store) -> BuiltMethod:
    assets = pympp.evm_assets()
    evm = pympp.evm_server()
    if method.settle is None and not method.facilitator_url:
        raise ConfigError(
            f"EVM method {method.name!r} needs facilitator_url (or a settle hook in Python)",
            key=f"methods.{method.name}.facilitator_url",
        )
    currency: Any = method.currency
    authorization: Any = None
    if method.eip712_name and method.eip712_version:
        authorization = {"name": method.eip712_name, "version": method.eip712_version}
    else:
        known = [
            asset
            for asset in vars(assets).values()
            if isinstance(asset, assets.EvmAsset)
            and asset.address.lower() == method.currency.lower()
            and asset.chain_id == method.chain_id
        ]
        if not known:
            raise ConfigError(
                f"EVM method {method.name!r}: token {method.currency} on chain {method.chain_id}"
                " is not a known EIP-3009 asset; set eip712_name and eip712_version",
                key=f"methods.{method.name}",
            )
        currency = known[0]
    server = evm.charge(
        currency=currency,
        recipient=method.recipient,
        chain_id=method.chain_id,
        decimals=method.decimals,
        authorization=authorization,
        facilitator=None if method.settle is not None else method.facilitator_url,
        settle=method.settle,
        store=store,
        # x402 clients (not only mppx's) bind a payment to its route by the resource URL.
        route_binding="resource",
    )
    return BuiltMethod(method, server, method.currency, method.decimals)
