"""End-to-end harness: the proxy's configs, its ledger and what travels on the wire."""

from __future__ import annotations

import asyncio
import base64
import json
import textwrap
import time
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

from mpp_proxy.state import open_store
from mpp_proxy.state.base import Payment

T = TypeVar("T")

SECRET = "e2e-hmac-secret-0123456789abcdef0123"
REALM = "e2e.mpp-proxy.test"
UPSTREAM_KEY = "sk-e2e-upstream-key-never-shown"
# Who receives each method's payments (fresh, so balances start at zero).
TEMPO_RECIPIENT = "0x00000000000000000000000000000000000E2E01"
EVM_RECIPIENT = "0x00000000000000000000000000000000000E2E02"
# A made-up EIP-3009 token: settlement is the local hook, the signature check is real.
EVM_TOKEN = "0x00000000000000000000000000000000000E2E0D"
EVM_DOMAIN = {"name": "E2E Dollar", "version": "1"}
EVM_CHAIN_ID = 31337
STRIPE_KEY = "sk_test_e2eFakeStripeKey0123456789"
STRIPE_NETWORK = "profile_e2e_network"
PRICE = "0.05"
PRICE_BASE = 50_000  # in 6-decimal base units
METHODS = ("tempo", "evm", "stripe", "test")


def run(coro: Awaitable[T]) -> T:
    async def main() -> T:
        return await coro

    return asyncio.run(main())


# ------------------------------------------------------------------------------ configs


def proxy_py(
    *,
    state: str,
    echo_url: str,
    openai_url: str,
    rpc_url: str,
    stripe_url: str,
    settled_log: Path,
    challenge_ttl: float = 300.0,
    credit_ttl: float = 3600.0,
    lease_seconds: float = 30.0,
    settle: str | None = None,
) -> str:
    """A proxy.py offering each method on its own echo routes, plus an OpenAI service.

    `settle` applies to every route ("before" or "after"; Stripe always settles before), None
    leaves each method's own timing (after for all but Stripe).

    Routes per method m: `GET /api/echo/m/a`, `GET /api/echo/m/b` (same price: a credential for
    one never opens the other) and `GET /api/status/m/:code`. Every method pays
    `GET /api/sleep?s=` (the upstream holds the request) and the OpenAI service's
    `POST /openai/v1/chat/completions`.
    EVM settles through a local hook that appends each authorization to `settled_log`.
    """
    return textwrap.dedent(
        f'''\
        """e2e proxy.py (generated)."""
        import hashlib
        import json

        from mpp_proxy import Proxy, charge, free, methods, services
        from mpp_proxy.config.model import EvmMethod

        SETTLED = {str(settled_log)!r}


        def settle(authorization):
            """Local EVM settlement: record the verified authorization, return a reference."""
            payload = authorization.payload
            doc = {{"payload": payload, "source": authorization.source}}
            line = json.dumps(doc, sort_keys=True)
            with open(SETTLED, "a") as f:
                f.write(line + "\\n")
            return "0x" + hashlib.sha256(line.encode()).hexdigest()


        tempo = methods.tempo(
            "usd",
            recipient={TEMPO_RECIPIENT!r},
            currency="0x20c0000000000000000000000000000000000000",
            chain_id=31337,
            rpc_url={rpc_url!r},
        )
        evm = EvmMethod(
            name="eusd",
            currency={EVM_TOKEN!r},
            recipient={EVM_RECIPIENT!r},
            chain_id={EVM_CHAIN_ID},
            decimals=6,
            eip712_name={EVM_DOMAIN["name"]!r},
            eip712_version={EVM_DOMAIN["version"]!r},
            settle=settle,
        )
        card = methods.stripe(
            "card",
            secret_key={STRIPE_KEY!r},
            network_id={STRIPE_NETWORK!r},
            currency="usd",
            api_base={stripe_url!r},
        )
        play = methods.test_money("play", currency="TEST", decimals=2)
        used = [tempo, evm, card, play]
        by_kind = {{"tempo": "usd", "evm": "eusd", "stripe": "card", "test": "play"}}
        SETTLE = {settle!r}


        def terms(*kinds):
            """The settle option for routes paid with these kinds (Stripe only settles before)."""
            if SETTLE is None or (SETTLE == "after" and "stripe" in kinds):
                return {{}}
            return {{"settle": SETTLE}}


        routes = {{"GET /free": free}}
        for kind, name in by_kind.items():
            routes[f"GET /echo/{{kind}}/a"] = charge({PRICE!r}, name, **terms(kind))
            routes[f"GET /echo/{{kind}}/b"] = charge({PRICE!r}, name, **terms(kind))
            routes[f"GET /status/{{kind}}/:code"] = charge({PRICE!r}, name, **terms(kind))
        routes["GET /sleep"] = charge({PRICE!r}, *used, **terms(*by_kind))

        config = Proxy(
            secret_key={SECRET!r},
            realm={REALM!r},
            state={state!r},
            allow_test_payments=True,
            challenge_ttl={challenge_ttl!r},
            credit_ttl={credit_ttl!r},
            lease_seconds={lease_seconds!r},
            methods=used,
            services=[
                services.service(
                    "api",
                    base_url={echo_url!r},
                    routes=routes,
                    timeouts={{"read": 30.0}},
                ),
                services.openai(
                    api_key={UPSTREAM_KEY!r},
                    base_url={openai_url!r},
                    routes={{
                        "GET /v1/models": free,
                        "POST /v1/chat/completions": charge({PRICE!r}, *used, **terms(*by_kind)),
                    }},
                ),
            ],
        )
        '''
    )


def proxy_toml(*, state: str, echo_url: str, rpc_url: str, challenge_ttl: float = 300.0) -> str:
    """The operator's format: one Tempo method on the echo upstream."""
    return textwrap.dedent(
        f"""\
        [proxy]
        secret_key = "${{E2E_SECRET}}"
        realm = "{REALM}"
        state = "{state}"
        challenge_ttl = {challenge_ttl}

        [methods.usd]
        kind = "tempo"
        recipient = "{TEMPO_RECIPIENT}"
        currency = "0x20c0000000000000000000000000000000000000"
        chain_id = 31337
        rpc_url = "{rpc_url}"

        [services.api]
        base_url = "{echo_url}"

        [services.api.routes]
        "GET /free" = "free"
        "GET /echo/tempo/a" = {{ price = "{PRICE}", pay_with = ["usd"] }}
        "GET /echo/tempo/b" = {{ price = "{PRICE}", pay_with = ["usd"] }}
        "GET /sleep" = {{ price = "{PRICE}", pay_with = ["usd"] }}
        """
    )


# ------------------------------------------------------------------------------ ledger and wire


def ledger(state: str) -> list[Payment]:
    """Every ledger row of the state URL, newest first (read by a separate store instance)."""

    async def read() -> list[Payment]:
        store = open_store(state)
        await store.open()
        try:
            return await store.list_payments(limit=1000)
        finally:
            await store.close()

    return run(read())


def b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def receipt(response: httpx.Response) -> dict[str, Any]:
    """The decoded Payment-Receipt of a response (KeyError when there is none)."""
    doc: dict[str, Any] = json.loads(b64decode(response.headers["payment-receipt"]))
    return doc


def credential_doc(authorization: str) -> dict[str, Any]:
    """The JSON inside `Authorization: Payment <b64>`."""
    doc: dict[str, Any] = json.loads(b64decode(authorization.split(" ", 1)[1]))
    return doc


def credential_value(doc: Mapping[str, Any]) -> str:
    return "Payment " + b64encode(json.dumps(doc, separators=(",", ":")).encode())


def tampered(authorization: str) -> str:
    """The same credential with a lower amount in the echoed challenge request (HMAC mismatch)."""
    doc = credential_doc(authorization)
    request = json.loads(b64decode(doc["challenge"]["request"]))
    request["amount"] = str(int(request["amount"]) - 1)
    doc["challenge"]["request"] = b64encode(
        json.dumps(request, separators=(",", ":"), sort_keys=True).encode()
    )
    return credential_value(doc)


def as_method(authorization: str, method: str) -> str:
    """The same credential claiming another payment method (never offered on the route)."""
    doc = credential_doc(authorization)
    doc["challenge"]["method"] = method
    return credential_value(doc)


def problem(response: httpx.Response) -> dict[str, Any]:
    assert response.headers.get("content-type", "").startswith("application/problem+json"), (
        response.status_code,
        response.headers,
        response.text[:500],
    )
    doc: dict[str, Any] = response.json()
    return doc


def challenges(response: httpx.Response) -> list[str]:
    return response.headers.get_list("www-authenticate")


def slug(response: httpx.Response) -> str:
    return str(problem(response).get("type", "")).rsplit("/", 1)[-1]


def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def statuses(responses: Sequence[httpx.Response]) -> list[int]:
    return sorted(r.status_code for r in responses)
