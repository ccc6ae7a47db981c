"""Tempo through the gate on a local chain (`anvil --network tempo`): real transfers."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from mpp import Challenge, Receipt
from mpp.methods.tempo import TempoAccount
from mpp.methods.tempo import client as tempo_client
from mpp.runtime import CredentialParams
from payment_harness import Harness, config, header, paid, with_harness, www_authenticate

from mpp_proxy.config.model import TempoMethod
from mpp_proxy.payments import Authorization
from mpp_proxy.problems import Problem
from mpp_proxy.state import PaymentStatus
from tests.support.anvil import CHAIN_ID, PATH_USD, Anvil

FORECAST = "GET /v1/forecast/:city"
CHAT = "POST /v1/chat"


@pytest.fixture(scope="module")
def chain() -> Iterator[Anvil]:
    with Anvil() as anvil:
        yield anvil


def tempo_config(chain: Anvil, recipient: str, **proxy: Any) -> Any:
    # The node itself, not the test relay: the gate's RPC client copes with anvil's
    # one-parameter eth_sendRawTransactionSync on its own.
    method = TempoMethod(
        "usd", recipient=recipient, currency=PATH_USD, chain_id=CHAIN_ID, rpc_url=chain.url
    )
    return config(
        paid("GET", "/v1/forecast/:city", "0.05", "usd"),
        paid("POST", "/v1/chat", "0.05", "usd"),
        methods=(method,),
        **proxy,
    )


async def sign(chain: Anvil, d: Problem) -> str:
    payer = await asyncio.to_thread(chain.new_account)
    method = tempo_client.charge(account=payer, rpc_url=chain.url, chain_id=CHAIN_ID)
    challenge = Challenge.from_www_authenticate(www_authenticate(d)[0])
    return await method.create_credential(CredentialParams(challenge=challenge))


async def present(h: Harness, route: str, path: str, credential: str) -> Authorization | Problem:
    return await h.authorize(h.request(route, path, headers=[("Authorization", credential)]))


def slug(d: Any) -> str:
    assert isinstance(d, Problem), d
    return str(json.loads(d.body)["type"]).rsplit("/", 1)[-1]


def fresh_recipient() -> str:
    return str(TempoAccount.from_key("0x" + secrets.token_hex(32)).address)


def test_tempo_payment_is_a_real_transfer(chain: Anvil) -> None:
    recipient = fresh_recipient()

    async def body(h: Harness) -> None:
        d = await h.challenge(h.request(FORECAST, "/api/v1/forecast/paris"))
        auth = await present(h, FORECAST, "/api/v1/forecast/paris", await sign(chain, d))
        assert isinstance(auth, Authorization), getattr(auth, "body", auth)
        receipt = Receipt.from_payment_receipt(header(auth, "payment-receipt") or "")
        assert receipt.method == "tempo" and receipt.reference.startswith("0x")
        onchain = chain.receipt(receipt.reference)
        assert onchain is not None and onchain["status"] == "0x1"
        assert chain.balance(recipient) == 50_000
        row = await h.store.get_payment(auth.payment.key)
        assert row is not None and row.reference == receipt.reference
        assert (row.kind, row.amount, row.currency) == ("tempo", "50000", PATH_USD)
        await auth.delivered()
        row = await h.store.get_payment(auth.payment.key)
        assert row is not None and row.status is PaymentStatus.DELIVERED

    with_harness(body, tempo_config(chain, recipient))


def test_tempo_replay_other_route_tamper_expiry(chain: Anvil) -> None:
    recipient = fresh_recipient()

    async def body(h: Harness) -> None:
        d = await h.challenge(h.request(FORECAST, "/api/v1/forecast/paris"))
        credential = await sign(chain, d)
        assert slug(await present(h, CHAT, "/api/v1/chat", credential)) == "invalid-challenge"
        token = credential.split(" ", 1)[1]
        doc = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        doc["challenge"]["expires"] = "2099-01-01T00:00:00Z"
        raw = json.dumps(doc).encode()
        tampered = "Payment " + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        assert slug(await present(h, FORECAST, "/api/v1/forecast/paris", tampered)) == (
            "invalid-challenge"
        )
        auth = await present(h, FORECAST, "/api/v1/forecast/paris", credential)
        assert isinstance(auth, Authorization), getattr(auth, "body", auth)
        await auth.delivered()
        replay = await present(h, FORECAST, "/api/v1/forecast/paris", credential)
        assert isinstance(replay, Problem) and replay.status == 403
        # the same signed transaction in another encoding: pympp's replay store refuses it
        other = (
            "Payment "
            + base64.urlsafe_b64encode(
                json.dumps(
                    json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))), indent=1
                ).encode()
            )
            .rstrip(b"=")
            .decode()
        )
        again = await present(h, FORECAST, "/api/v1/forecast/paris", other)
        assert isinstance(again, Problem) and again.status == 403, again.body
        assert chain.balance(recipient) == 50_000

    with_harness(body, tempo_config(chain, recipient))


def test_tempo_expired_challenge(chain: Anvil) -> None:
    recipient = fresh_recipient()

    async def body(h: Harness) -> None:
        d = await h.challenge(h.request(FORECAST, "/api/v1/forecast/paris"))
        credential = await sign(chain, d)
        await asyncio.sleep(1.6)
        assert slug(await present(h, FORECAST, "/api/v1/forecast/paris", credential)) == (
            "payment-expired"
        )
        assert chain.balance(recipient) == 0

    with_harness(body, tempo_config(chain, recipient, challenge_ttl=1.0))


def test_tempo_fee_payer_sponsors_and_config_errors_hide_the_key(chain: Anvil) -> None:
    from mpp_proxy.config.errors import ConfigError
    from mpp_proxy.config.model import Secret
    from mpp_proxy.payments import PaymentGate
    from mpp_proxy.state import open_store

    key = "0x" + secrets.token_hex(32)
    method = TempoMethod(
        "usd",
        recipient=fresh_recipient(),
        currency=PATH_USD,
        chain_id=CHAIN_ID,
        rpc_url=chain.url,
        fee_payer_key=Secret(key),
    )
    cfg = config(paid("GET", "/v1/forecast/:city", "0.05", "usd"), methods=(method,))

    async def body(h: Harness) -> None:
        d = await h.challenge(h.request(FORECAST, "/api/v1/forecast/paris"))
        c = Challenge.from_www_authenticate(www_authenticate(d)[0])
        assert c.request["methodDetails"]["feePayer"] is True
        assert key not in repr(h.gate.config) and key.encode() not in d.body

    with_harness(body, cfg)
    short = config(
        paid("GET", "/v1/forecast/:city", "0.05", "usd"), methods=(method,), challenge_ttl=5
    )
    with pytest.raises(ConfigError, match="challenge_ttl"):
        PaymentGate(short, open_store("memory://"))
    bad = TempoMethod(
        "usd",
        recipient=fresh_recipient(),
        currency=PATH_USD,
        chain_id=CHAIN_ID,
        fee_payer_key=Secret("0xnot-a-key-but-secret-text"),
    )
    with pytest.raises(ConfigError) as info:
        PaymentGate(
            config(paid("GET", "/v1/forecast/:city", "0.05", "usd"), methods=(bad,)),
            open_store("memory://"),
        )
    assert "not-a-key" not in str(info.value)


def test_payment_settled_by_a_process_that_died_before_recording_it_is_found(
    chain: Anvil,
) -> None:
    import hashlib
    import time

    from mpp import Credential
    from mpp.server.http import PaymentVerified, Request

    from mpp_proxy.state import Payment

    recipient = fresh_recipient()

    async def body(h: Harness) -> None:
        d = await h.challenge(h.request(FORECAST, "/api/v1/forecast/paris"))
        credential = await sign(chain, d)
        # The dying process: pympp settled (broadcast, replay key stored), then kill -9 hit
        # before the ledger learnt the reference. Its claim is left with an expired lease.
        handler = h.gate.pympp_handler(h.service, h.route(FORECAST))
        settled = await handler(
            Request(
                "GET",
                "http://api.test/api/v1/forecast/paris",
                headers={"Authorization": credential},
            )
        )
        assert isinstance(settled, PaymentVerified)
        assert chain.balance(recipient) == 50_000
        now = time.time()
        c = Credential.from_authorization(credential)
        key = hashlib.sha256(credential.split(" ", 1)[1].encode()).hexdigest()
        claim = Payment(
            key=key, challenge_id=c.challenge.id, method="usd", kind="tempo", reference="",
            amount="50000", currency=PATH_USD, service="api", route=FORECAST,
            scope="GET /api/v1/forecast/paris", payer="", status=PaymentStatus.IN_FLIGHT,
            owner="killed", lease_until=now - 1, credit_until=0.0, attempts=1,
            created_at=now, updated_at=now,
        )  # fmt: skip
        assert await h.store.insert_payment(claim) is None

        auth = await present(h, FORECAST, "/api/v1/forecast/paris", credential)
        assert isinstance(auth, Authorization), getattr(auth, "body", auth)
        assert auth.reference.lower() == settled.receipt.reference.lower()
        await auth.delivered()
        assert chain.balance(recipient) == 50_000  # paid once, delivered once
        # A re-encoded copy is a new claim (attempt 1): pympp's replay store refuses it.
        token = credential.split(" ", 1)[1]
        doc = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        copy = "Payment " + base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()
        again = await present(h, FORECAST, "/api/v1/forecast/paris", copy)
        assert isinstance(again, Problem) and again.status == 403

    with_harness(body, tempo_config(chain, recipient))
