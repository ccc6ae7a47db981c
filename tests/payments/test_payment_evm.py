"""EVM (EIP-3009) through the gate: pympp's client signs locally, a local hook settles."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

from eth_account import Account
from mpp import Challenge, Receipt
from mpp.errors import VerificationFailedError
from mpp.methods.evm import client as evm_client
from mpp.methods.evm.assets import BASE_USDC
from mpp.runtime import CredentialParams
from payment_harness import Harness, config, header, paid, with_harness, www_authenticate

from mpp_proxy.config.model import EvmMethod
from mpp_proxy.payments import Authorization
from mpp_proxy.problems import Problem
from mpp_proxy.state import PaymentStatus

RECIPIENT = "0x742d35Cc6634c0532925a3b844bC9e7595F8fE00"
PAYER = Account.from_key("0x" + "4b" * 32)
FORECAST = "GET /v1/forecast/:city"
CHAT = "POST /v1/chat"


class Settler:
    """The local settlement hook: records what it settled; can be told to fail."""

    def __init__(self) -> None:
        self.settled: list[Any] = []
        self.fail: BaseException | None = None

    def __call__(self, authorization: Any) -> str:
        if self.fail is not None:
            raise self.fail
        self.settled.append(authorization)
        return "0x" + f"{len(self.settled):064x}"


def evm_config(settler: Settler, **proxy: Any) -> Any:
    method = EvmMethod(
        "usdc", currency=BASE_USDC.address, recipient=RECIPIENT, chain_id=8453, settle=settler
    )
    return config(
        paid("GET", "/v1/forecast/:city", "0.05", "usdc"),
        paid("POST", "/v1/chat", "0.05", "usdc"),
        methods=(method,),
        **proxy,
    )


async def sign(d: Problem, account: Any = PAYER) -> str:
    method = evm_client.charge(currency=BASE_USDC, account=account)
    challenge = Challenge.from_www_authenticate(www_authenticate(d)[0])
    return await method.create_credential(CredentialParams(challenge=challenge))


async def present(h: Harness, route: str, path: str, credential: str) -> Authorization | Problem:
    return await h.authorize(h.request(route, path, headers=[("Authorization", credential)]))


def decode(credential: str) -> dict[str, Any]:
    token = credential.split(" ", 1)[1]
    return dict(json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))))


def encode(doc: dict[str, Any], indent: int | None = None) -> str:
    raw = json.dumps(doc, indent=indent).encode()
    return "Payment " + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def slug(d: Any) -> str:
    assert isinstance(d, Problem), d
    return str(json.loads(d.body)["type"]).rsplit("/", 1)[-1]


def test_evm_payment_settles_through_the_hook_with_receipt_and_ledger() -> None:
    settler = Settler()

    async def body(h: Harness) -> None:
        d = await h.challenge(h.request(FORECAST, "/api/v1/forecast/paris"))
        c = Challenge.from_www_authenticate(www_authenticate(d)[0])
        assert c.method == "evm" and c.request["amount"] == "50000"
        assert c.request["recipient"] == RECIPIENT
        auth = await present(h, FORECAST, "/api/v1/forecast/paris", await sign(d))
        assert isinstance(auth, Authorization), getattr(auth, "body", auth)
        assert len(settler.settled) == 1
        receipt = Receipt.from_payment_receipt(header(auth, "payment-receipt") or "")
        assert receipt.method == "evm" and receipt.reference == "0x" + f"{1:064x}"
        row = await h.store.get_payment(auth.payment.key)
        assert row is not None
        assert row.payer.lower() == PAYER.address.lower()
        assert (row.kind, row.amount, row.currency) == ("evm", "50000", BASE_USDC.address)
        await auth.delivered()

    with_harness(body, evm_config(settler))


def test_evm_replay_tamper_other_route_and_expiry() -> None:
    settler = Settler()

    async def body(h: Harness) -> None:
        d = await h.challenge(h.request(FORECAST, "/api/v1/forecast/paris"))
        credential = await sign(d)
        # another route at the same price
        assert slug(await present(h, CHAT, "/api/v1/chat", credential)) == "invalid-challenge"
        auth = await present(h, FORECAST, "/api/v1/forecast/paris", credential)
        assert isinstance(auth, Authorization)
        await auth.delivered()
        # replay of the delivered credential
        replay = await present(h, FORECAST, "/api/v1/forecast/paris", credential)
        assert isinstance(replay, Problem) and replay.status == 403
        # a different encoding of the same authorization: pympp's replay store refuses it
        other = encode(decode(credential), indent=1)
        again = await present(h, FORECAST, "/api/v1/forecast/paris", other)
        assert isinstance(again, Problem) and again.status == 403, again.body
        assert len(settler.settled) == 1
        # a signature for another challenge's terms: proof fails
        d2 = await h.challenge(h.request(FORECAST, "/api/v1/forecast/paris"))
        good = decode(await sign(d2))
        good["payload"]["value"] = "49999"
        forged = encode(good)
        r = await present(h, FORECAST, "/api/v1/forecast/paris", forged)
        assert slug(r) == "verification-failed" and isinstance(r, Problem) and r.status == 402
        assert www_authenticate(r)

    with_harness(body, evm_config(settler))


def test_evm_expired_challenge() -> None:
    async def body(h: Harness) -> None:
        d = await h.challenge(h.request(FORECAST, "/api/v1/forecast/paris"))
        credential = await sign(d)
        await asyncio.sleep(1.1)
        r = await present(h, FORECAST, "/api/v1/forecast/paris", credential)
        assert slug(r) == "payment-expired"

    with_harness(body, evm_config(Settler(), challenge_ttl=0.5))


def test_evm_settlement_failures() -> None:
    settler = Settler()

    async def body(h: Harness) -> None:
        # The settler says no: nothing settled, 402 with a fresh challenge, retry allowed.
        settler.fail = VerificationFailedError("insufficient token balance")
        d = await h.challenge(h.request(FORECAST, "/api/v1/forecast/paris"))
        credential = await sign(d)
        r = await present(h, FORECAST, "/api/v1/forecast/paris", credential)
        assert slug(r) == "verification-failed"
        assert "insufficient token balance" in json.loads(r.body)["detail"]  # type: ignore[union-attr]
        assert await h.store.list_payments() == []
        settler.fail = None
        auth = await present(h, FORECAST, "/api/v1/forecast/paris", credential)
        assert isinstance(auth, Authorization)
        # The settler crashes: 500, no traceback, nothing recorded as paid.
        settler.fail = RuntimeError("node exploded at 0xdeadbeef with key sk_live_abc123")
        d = await h.challenge(h.request(FORECAST, "/api/v1/forecast/rome"))
        r = await present(h, FORECAST, "/api/v1/forecast/rome", await sign(d))
        assert isinstance(r, Problem) and r.status == 500
        assert slug(r) == "internal-payment-error"
        assert b"exploded" not in r.body and b"sk_live" not in r.body
        rows = await h.store.list_payments()
        assert [row.status for row in rows] == [PaymentStatus.IN_FLIGHT]

    with_harness(body, evm_config(settler))


def test_evm_unknown_token_needs_eip712_domain() -> None:
    from mpp_proxy.config.errors import ConfigError
    from mpp_proxy.payments import PaymentGate
    from mpp_proxy.state import open_store

    token = "0x" + "12" * 20
    cfg = config(
        paid("GET", "/v1/x", "1", "tok"),
        methods=(
            EvmMethod("tok", currency=token, recipient=RECIPIENT, chain_id=1, settle=Settler()),
        ),
    )
    try:
        PaymentGate(cfg, open_store("memory://"))
    except ConfigError as exc:
        assert "eip712_name" in str(exc)
    else:
        raise AssertionError("an unknown token was accepted without its EIP-712 domain")
    named = config(
        paid("GET", "/v1/x", "1", "tok"),
        methods=(
            EvmMethod(
                "tok",
                currency=token,
                recipient=RECIPIENT,
                chain_id=1,
                settle=Settler(),
                eip712_name="Token",
                eip712_version="1",
            ),
        ),
    )
    PaymentGate(named, open_store("memory://"))


class SlowSettler(Settler):
    """Settles only when released, so a test can cancel the request meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, authorization: Any) -> str:  # type: ignore[override]
        self.started.set()
        await self.release.wait()
        return Settler.__call__(self, authorization)


def test_cancelled_request_during_settlement_leaves_a_credit() -> None:
    settler = SlowSettler()

    async def body(h: Harness) -> None:
        d = await h.challenge(h.request(FORECAST, "/api/v1/forecast/paris"))
        credential = await sign(d)
        request = asyncio.ensure_future(present(h, FORECAST, "/api/v1/forecast/paris", credential))
        await settler.started.wait()
        request.cancel()  # the client went away while the payment was settling
        settler.release.set()
        for _ in range(100):
            rows = await h.store.list_payments()
            if rows and rows[0].status is PaymentStatus.CREDITED:
                break
            await asyncio.sleep(0.02)
        assert [r.status for r in rows] == [PaymentStatus.CREDITED]
        assert rows[0].reference == "0x" + f"{1:064x}"
        again = await present(h, FORECAST, "/api/v1/forecast/paris", credential)
        assert isinstance(again, Authorization) and again.redeemed
        assert len(settler.settled) == 1

    with_harness(body, evm_config(settler))


def test_pympp_client_pays_an_evm_challenge_through_the_gate() -> None:
    import httpx
    from mpp.client import PaymentTransport

    settler = Settler()

    async def body(h: Harness) -> None:
        async def handle(request: httpx.Request) -> httpx.Response:
            decision = await h.authorize(
                h.request(
                    FORECAST,
                    request.url.path,
                    headers=[(k.decode(), v.decode()) for k, v in request.headers.raw],
                )
            )
            if isinstance(decision, Problem):
                return httpx.Response(
                    decision.status, headers=decision.headers, content=decision.body
                )
            await decision.delivered()
            return httpx.Response(200, headers=decision.receipt_headers, json={"ok": True})

        method = evm_client.charge(currency=BASE_USDC, account=PAYER)
        transport = PaymentTransport(methods=[method], inner=httpx.MockTransport(handle))
        async with httpx.AsyncClient(transport=transport) as client:
            r = await client.get("http://api.test/api/v1/forecast/paris")
        assert r.status_code == 200, r.text
        assert Receipt.from_payment_receipt(r.headers["payment-receipt"]).method == "evm"
        assert len(settler.settled) == 1

    with_harness(body, evm_config(settler))
