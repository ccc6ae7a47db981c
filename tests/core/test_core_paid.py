"""Paid routes end to end: 402, pay with test money, receipt on success, credit on every failure."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest
from core_harness import Served, service

from mpp_proxy.client.testmoney import pay_challenge
from mpp_proxy.config.auth import bearer
from mpp_proxy.config.model import (
    Config,
    Price,
    ProxySettings,
    Route,
    Secret,
    TestMoneyMethod,
    Timeouts,
)
from mpp_proxy.core import Proxy
from mpp_proxy.payments.credentials import ledger_key
from tests.support.upstream import Upstream

UPSTREAM_KEY = "sk-upstream-paid-0123456789"
PRICE = Price(Decimal("0.05"), ("play",))


def paid(method: str, pattern: str, **kw: object) -> Route:
    """Settled before forwarding: these routes pin credits (settling after: test_core_settle)."""
    kw.setdefault("settle", "before")
    return Route(method, pattern, PRICE, **kw)  # type: ignore[arg-type]


def paid_config(base_url: str, down_url: str) -> Config:
    settings = ProxySettings(
        secret_key=Secret("core-paid-test-secret-0123456789abcdef"),
        realm="core.test",
        state="memory://",
        allow_test_payments=True,
    )
    routes = (
        paid("GET", "/echo/*"),
        paid("POST", "/echo/upload", max_body_bytes=1000),
        paid("GET", "/fail-once"),
        paid("GET", "/status/:code"),
        paid("GET", "/reset-mid-body"),
        paid("GET", "/sse"),
        Route("GET", "/free/*"),
    )
    fast = Timeouts(connect=1.0, read=2.0, write=2.0, pool=1.0)
    return Config(
        proxy=settings,
        methods=(TestMoneyMethod("play"),),
        services=(
            service("api", base_url, routes=routes, auth=bearer(UPSTREAM_KEY), timeouts=fast),
            service("down", down_url, routes=(paid("GET", "/*"),), timeouts=fast),
        ),
    )


@pytest.fixture(scope="module")
def app(upstream: Upstream, closed_port: int) -> Proxy:
    return Proxy(paid_config(upstream.url, f"http://127.0.0.1:{closed_port}"))


@pytest.fixture(scope="module")
def client(app: Proxy) -> Iterator[httpx.Client]:
    with Served(app) as s, httpx.Client(base_url=s.url, timeout=10) as c:
        yield c


def pay(client: httpx.Client, method: str, url: str, **kw: object) -> str:
    """Ask, get the 402, and return a paid credential for exactly this request."""
    r = client.request(method, url, **kw)  # type: ignore[arg-type]
    assert r.status_code == 402, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["cache-control"] == "no-store"
    return pay_challenge(r.headers.get_list("www-authenticate"))


def test_unpaid_request_gets_402_and_never_reaches_the_upstream(
    client: httpx.Client, upstream: Upstream
) -> None:
    before = upstream.requests
    r = client.get("/api/echo/x")
    assert r.status_code == 402
    assert any(v.startswith("Payment ") for v in r.headers.get_list("www-authenticate"))
    assert upstream.requests == before


def test_paid_request_is_forwarded_with_a_receipt_and_no_payment_headers(
    client: httpx.Client,
) -> None:
    credential = pay(client, "GET", "/api/echo/paid?q=1")
    r = client.get("/api/echo/paid?q=1", headers={"Authorization": credential})
    assert r.status_code == 200
    assert "payment-receipt" in r.headers
    assert r.headers["cache-control"] == "private"
    seen = dict((n, v) for n, v in r.json()["headers"])
    assert seen["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert not [n for n in seen if n.startswith("payment")]
    assert r.json()["query"] == "q=1"
    # Delivered: the same credential is spent.
    again = client.get("/api/echo/paid?q=1", headers={"Authorization": credential})
    assert again.status_code in (402, 403, 409)
    assert "payment-receipt" not in again.headers


def test_credential_for_one_request_does_not_open_another(client: httpx.Client) -> None:
    credential = pay(client, "GET", "/api/echo/cheap")
    r = client.get("/api/echo/other", headers={"Authorization": credential})
    assert r.status_code in (402, 403)
    assert "payment-receipt" not in r.headers


def test_paid_body_is_forwarded_and_limited(client: httpx.Client) -> None:
    body = b'{"prompt": "hello"}'
    credential = pay(client, "POST", "/api/echo/upload", content=body)
    r = client.post("/api/echo/upload", content=body, headers={"Authorization": credential})
    assert r.status_code == 200
    assert r.json()["body"] == body.decode()
    assert client.post("/api/echo/upload", content=b"x" * 1001).status_code == 413


def test_upstream_failure_keeps_the_payment_as_a_credit_redeemable_once(
    client: httpx.Client,
) -> None:
    url = "/api/fail-once?key=credit-test"
    credential = pay(client, "GET", url)
    r = client.get(url, headers={"Authorization": credential})
    assert r.status_code == 503
    assert "payment-receipt" not in r.headers
    assert r.json()["type"].endswith("/payment-credited")
    assert r.json()["upstreamStatus"] == 503
    # Retry with the same credential: forwarded again without paying, now delivered.
    r = client.get(url, headers={"Authorization": credential})
    assert r.status_code == 200
    assert "payment-receipt" in r.headers
    r = client.get(url, headers={"Authorization": credential})
    assert r.status_code != 200


def test_upstream_5xx_on_a_paid_route_is_a_credit_problem(client: httpx.Client) -> None:
    url = "/api/status/500"
    credential = pay(client, "GET", url)
    r = client.get(url, headers={"Authorization": credential})
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith("/payment-credited")
    assert UPSTREAM_KEY not in r.text


def test_unreachable_upstream_on_a_paid_route_is_502_before_payment(
    app: Proxy, client: httpx.Client
) -> None:
    credential = pay(client, "GET", "/down/x")
    r = client.get("/down/x", headers={"Authorization": credential})
    assert r.status_code == 502
    assert r.json()["type"].endswith("/upstream-unreachable")
    assert "payment-receipt" not in r.headers
    # The connection is opened before payment: the credential was neither verified nor
    # settled, so the ledger never saw it and it stays usable.
    key = ledger_key(credential.removeprefix("Payment "))
    assert asyncio.run(app.store.get_payment(key)) is None


def test_mid_body_reset_on_a_paid_route_aborts_and_credits(client: httpx.Client) -> None:
    url = "/api/reset-mid-body?n=1000000"
    credential = pay(client, "GET", url)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.get(url, headers={"Authorization": credential})
    # The credit lets the same credential try again (it fails the same way here, but it is
    # forwarded rather than refused or charged again).
    with (
        pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)),
        client.stream("GET", url, headers={"Authorization": credential}) as r,
    ):
        assert r.status_code == 200
        assert "payment-receipt" in r.headers
        for _ in r.iter_raw():
            pass


def test_paid_stream_is_delivered_event_by_event(client: httpx.Client) -> None:
    url = "/api/sse?n=3&interval=0.05"
    credential = pay(client, "GET", url)
    with client.stream("GET", url, headers={"Authorization": credential}) as r:
        assert r.status_code == 200
        assert "payment-receipt" in r.headers
        body = b"".join(r.iter_raw())
    assert body == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"


def test_free_route_next_to_paid_ones_needs_no_payment(client: httpx.Client) -> None:
    r = client.get("/api/free/x")
    assert r.status_code == 404  # the upstream's own 404 for an unknown test endpoint
    assert "payment-receipt" not in r.headers
