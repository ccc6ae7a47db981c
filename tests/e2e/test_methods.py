"""Every payment method through the served proxy: paying works, and every bad credential is refused.

Tempo settles on the local anvil chain, Stripe against the fake Stripe API on loopback, EVM
(EIP-3009) through the proxy.py settle hook. Refused credentials move no money.
"""

from __future__ import annotations

import calendar
import json
import time

import httpx
import pytest
from mpp.client.transport import PaymentTransport

from tests.e2e.harness import (
    EVM_RECIPIENT,
    METHODS,
    PRICE_BASE,
    TEMPO_RECIPIENT,
    b64encode,
    challenges,
    credential_doc,
    ledger,
    problem,
    receipt,
    run,
    slug,
    tampered,
)
from tests.e2e.parties import Deployment, Wallet
from tests.support.anvil import Anvil
from tests.support.fake_stripe import FakeStripe
from tests.support.upstream import Upstream

# What one payment of the routes' price moves, per method, in that method's base units.
BASE = {"tempo": PRICE_BASE, "evm": PRICE_BASE, "stripe": 5, "test": 5}
OTHER = {"tempo": "evm", "evm": "stripe", "stripe": "test", "test": "tempo"}


class Money:
    """What each method has settled so far, read from where it settles."""

    def __init__(self, chain: Anvil, stripe: FakeStripe, proxy: Deployment) -> None:
        self.chain = chain
        self.stripe = stripe
        self.proxy = proxy

    def settled(self, kind: str) -> int:
        if kind == "tempo":
            return self.chain.balance(TEMPO_RECIPIENT)
        if kind == "stripe":
            return sum(int(i["amount"]) for i in self.stripe.intents if i["status"] == "succeeded")
        if kind == "test":
            # Play money settles nowhere: count what the ledger kept.
            return sum(int(p.amount) for p in ledger(self.proxy.state) if p.kind == "test")
        try:
            lines = self.proxy.settled.read_text().splitlines()
        except FileNotFoundError:
            return 0
        total = 0
        for line in lines:
            auth = json.loads(line)["payload"]
            assert auth["to"].lower() == EVM_RECIPIENT.lower()
            total += int(auth["value"])
        return total


@pytest.fixture
def money(chain: Anvil, stripe_api: FakeStripe, proxy: Deployment) -> Money:
    return Money(chain, stripe_api, proxy)


def fresh_challenges(client: httpx.Client, path: str) -> list[str]:
    response = client.get(path)
    assert response.status_code == 402, response.text
    assert response.headers["cache-control"] == "no-store"
    return challenges(response)


def pay_via_transport(url: str, wallet: Wallet, kind: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = PaymentTransport(
            methods=[wallet.method(kind)], inner=httpx.AsyncHTTPTransport()
        )
        async with httpx.AsyncClient(transport=transport, timeout=60) as c:
            response = await c.get(url)
            await response.aread()
            return response

    return run(go())


@pytest.mark.parametrize("kind", METHODS)
def test_pympp_client_pays_and_the_payment_settles_once(
    kind: str, proxy: Deployment, wallet: Wallet, money: Money, echo: Upstream
) -> None:
    before = money.settled(kind)
    hits = echo.requests
    response = pay_via_transport(proxy.url + f"/api/echo/{kind}/a", wallet, kind)
    assert response.status_code == 200, response.text
    assert response.json()["path"] == f"/echo/{kind}/a"
    paid = receipt(response)
    assert paid["status"] == "success" and paid["method"] == kind
    assert money.settled(kind) - before == BASE[kind]
    assert echo.requests - hits == 1
    row = next(p for p in ledger(proxy.state) if p.reference == paid["reference"])
    assert (row.kind, row.status, row.amount) == (kind, "delivered", str(BASE[kind]))


@pytest.mark.parametrize("kind", METHODS)
def test_replayed_credential_is_refused_with_403(
    kind: str, proxy: Deployment, client: httpx.Client, wallet: Wallet, money: Money, echo: Upstream
) -> None:
    path = f"/api/echo/{kind}/a"
    credential = wallet.pay(kind, fresh_challenges(client, path))
    first = client.get(path, headers={"authorization": credential})
    assert first.status_code == 200, first.text
    settled, hits = money.settled(kind), echo.requests

    again = client.get(path, headers={"authorization": credential})

    assert again.status_code == 403, again.text
    assert "payment-receipt" not in again.headers
    assert not challenges(again)
    assert slug(again) == "credential-used"
    assert (money.settled(kind), echo.requests) == (settled, hits)


@pytest.mark.parametrize("kind", METHODS)
def test_tampered_credential_is_refused_with_402_and_a_fresh_challenge(
    kind: str, proxy: Deployment, client: httpx.Client, wallet: Wallet, money: Money, echo: Upstream
) -> None:
    path = f"/api/echo/{kind}/a"
    credential = wallet.pay(kind, fresh_challenges(client, path))
    settled, hits = money.settled(kind), echo.requests

    refused = client.get(path, headers={"authorization": tampered(credential)})

    assert refused.status_code == 402, refused.text
    assert slug(refused) == "invalid-challenge"
    assert challenges(refused), "a refused credential comes with a fresh challenge"
    assert refused.headers["cache-control"] == "no-store"
    assert (money.settled(kind), echo.requests) == (settled, hits)
    # Nothing was spent: the untouched credential still pays.
    ok = client.get(path, headers={"authorization": credential})
    assert ok.status_code == 200, ok.text
    assert money.settled(kind) - settled == BASE[kind]


@pytest.mark.parametrize("kind", METHODS)
def test_credential_bought_for_route_a_does_not_open_route_b(
    kind: str, proxy: Deployment, client: httpx.Client, wallet: Wallet, money: Money, echo: Upstream
) -> None:
    credential = wallet.pay(kind, fresh_challenges(client, f"/api/echo/{kind}/a"))
    settled, hits = money.settled(kind), echo.requests

    refused = client.get(f"/api/echo/{kind}/b", headers={"authorization": credential})

    assert refused.status_code == 402, refused.text
    assert slug(refused) == "invalid-challenge"
    assert f"/api/echo/{kind}/a" in problem(refused)["detail"]
    assert challenges(refused)
    assert (money.settled(kind), echo.requests) == (settled, hits)
    # The same price does not matter, and the query is part of the route binding too.
    refused_query = client.get(f"/api/echo/{kind}/a?more=1", headers={"authorization": credential})
    assert refused_query.status_code == 402
    ok = client.get(f"/api/echo/{kind}/a", headers={"authorization": credential})
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize("kind", METHODS)
def test_expired_credential_is_refused_with_402(
    kind: str, short_proxy: Deployment, wallet: Wallet, money: Money
) -> None:
    with httpx.Client(base_url=short_proxy.url, timeout=60) as client:
        path = f"/api/echo/{kind}/a"
        credential = wallet.pay(kind, fresh_challenges(client, path))
        expires = credential_doc(credential)["challenge"]["expires"]
        deadline = calendar.timegm(time.strptime(expires, "%Y-%m-%dT%H:%M:%SZ"))
        time.sleep(max(0.0, deadline - time.time()) + 0.5)
        settled = money.settled(kind)

        refused = client.get(path, headers={"authorization": credential})

        assert refused.status_code == 402, refused.text
        assert slug(refused) == "payment-expired"
        assert challenges(refused)
        assert money.settled(kind) == settled


@pytest.mark.parametrize("kind", METHODS)
def test_credential_of_a_method_the_route_does_not_offer_is_refused_with_400(
    kind: str, proxy: Deployment, client: httpx.Client, wallet: Wallet, money: Money, echo: Upstream
) -> None:
    other = OTHER[kind]
    credential = wallet.pay(other, fresh_challenges(client, f"/api/echo/{other}/a"))
    settled, hits = money.settled(other), echo.requests

    refused = client.get(f"/api/echo/{kind}/a", headers={"authorization": credential})

    assert refused.status_code == 400, refused.text
    assert slug(refused) == "method-unsupported"
    assert (money.settled(other), echo.requests) == (settled, hits)


def reencoded(authorization: str) -> str:
    """The same credential, byte-for-byte different: same JSON content, other whitespace."""
    doc = credential_doc(authorization)
    value = "Payment " + b64encode(json.dumps(doc, indent=1).encode())
    assert value != authorization
    return value


@pytest.mark.parametrize("kind", METHODS)
def test_the_same_credential_re_encoded_is_still_a_replay(
    kind: str, proxy: Deployment, client: httpx.Client, wallet: Wallet, money: Money, echo: Upstream
) -> None:
    path = f"/api/echo/{kind}/a"
    credential = wallet.pay(kind, fresh_challenges(client, path))
    first = client.get(path, headers={"authorization": credential})
    assert first.status_code == 200, first.text
    settled, hits = money.settled(kind), echo.requests

    again = client.get(path, headers={"authorization": reencoded(credential)})

    assert again.status_code == 403, again.text
    assert "payment-receipt" not in again.headers
    assert (money.settled(kind), echo.requests) == (settled, hits)


def test_a_route_with_every_method_offers_them_in_the_clients_accept_payment_order(
    client: httpx.Client,
) -> None:
    plain = client.get("/api/sleep?s=0")
    assert plain.status_code == 402
    offered = [c.split('method="', 1)[1].split('"', 1)[0] for c in challenges(plain)]
    assert sorted(offered) == sorted(METHODS)

    ranked = client.get(
        "/api/sleep?s=0", headers={"accept-payment": "stripe/charge, evm;q=0.5, tempo;q=0.9"}
    )
    order = [c.split('method="', 1)[1].split('"', 1)[0] for c in challenges(ranked)]
    assert order == ["stripe", "tempo", "evm"]

    none = client.get("/api/sleep?s=0", headers={"accept-payment": "tempo;q=0, *;q=0"})
    assert none.status_code == 400
    assert slug(none) == "method-unsupported"
