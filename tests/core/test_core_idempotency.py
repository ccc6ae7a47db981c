"""Idempotent retries: a delivered paid request re-sent with its Idempotency-Key gets the
stored response (same bytes, same receipt) instead of 403; another request under the key, 422."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest
from core_harness import Served, service

from mpp_proxy.client.testmoney import pay_challenge
from mpp_proxy.config.model import (
    Config,
    Price,
    ProxySettings,
    Route,
    Secret,
    TestMoneyMethod,
)
from mpp_proxy.core import Proxy
from tests.support.upstream import Upstream

PRICE = Price(Decimal("0.05"), ("play",))


@pytest.fixture(scope="module")
def client(upstream: Upstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    state = f"sqlite:///{tmp_path_factory.mktemp('idem') / 'state.db'}"
    config = Config(
        proxy=ProxySettings(
            secret_key=Secret("core-idempotency-secret-0123456789abcdef"),
            realm="core.test",
            state=state,
            allow_test_payments=True,
            replay_max_bytes=4096,
        ),
        methods=(TestMoneyMethod("play"),),
        services=(
            service(
                "api",
                upstream.url,
                routes=(
                    Route("POST", "/echo/*", PRICE),
                    Route("GET", "/bytes", PRICE),
                    Route("GET", "/echo/*", PRICE, settle="before"),
                ),
            ),
        ),
    )
    with Served(Proxy(config)) as s, httpx.Client(base_url=s.url, timeout=10) as c:
        yield c


def pay(client: httpx.Client, method: str, url: str, **kw: object) -> str:
    r = client.request(method, url, **kw)  # type: ignore[arg-type]
    assert r.status_code == 402, r.text
    return pay_challenge(r.headers.get_list("www-authenticate"))


def test_a_retry_with_the_key_gets_the_same_bytes_and_receipt(
    client: httpx.Client, upstream: Upstream
) -> None:
    body = b'{"prompt": "once"}'
    credential = pay(client, "POST", "/api/echo/run", content=body)
    headers = {"authorization": credential, "idempotency-key": "run-0001"}
    first = client.post("/api/echo/run", content=body, headers=headers)
    assert first.status_code == 200 and "payment-receipt" in first.headers
    hits = upstream.requests

    again = client.post("/api/echo/run", content=body, headers=headers)

    assert again.status_code == 200
    assert again.content == first.content
    assert again.headers["payment-receipt"] == first.headers["payment-receipt"]
    assert again.headers["idempotent-replayed"] == "true"
    assert upstream.requests == hits  # answered from the store
    # Without the key it is what it always was: a used credential.
    plain = client.post("/api/echo/run", content=body, headers={"authorization": credential})
    assert plain.status_code == 403


def test_the_key_with_another_body_or_path_is_422(client: httpx.Client) -> None:
    credential = pay(client, "POST", "/api/echo/a", content=b"one")
    headers = {"authorization": credential, "idempotency-key": "k-422"}
    assert client.post("/api/echo/a", content=b"one", headers=headers).status_code == 200
    other_body = client.post("/api/echo/a", content=b"two", headers=headers)
    assert other_body.status_code == 422, other_body.text
    assert other_body.json()["type"].endswith("/idempotency-key-reused")
    other_path = client.post("/api/echo/b", content=b"one", headers=headers)
    assert other_path.status_code == 422


def test_a_response_too_large_to_keep_answers_409_with_the_original_receipt(
    client: httpx.Client,
) -> None:
    url = "/api/bytes?n=10000"
    credential = pay(client, "GET", url)
    headers = {"authorization": credential, "idempotency-key": "big-1"}
    first = client.get(url, headers=headers)
    assert first.status_code == 200 and len(first.content) == 10000
    again = client.get(url, headers=headers)
    assert again.status_code == 409, again.text
    assert again.json()["type"].endswith("/replay-too-large")
    assert again.headers["payment-receipt"] == first.headers["payment-receipt"]


def test_a_settled_before_route_replays_too(client: httpx.Client) -> None:
    credential = pay(client, "GET", "/api/echo/before")
    headers = {"authorization": credential, "idempotency-key": "before-1"}
    first = client.get("/api/echo/before", headers=headers)
    again = client.get("/api/echo/before", headers=headers)
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.content == first.content


@pytest.mark.parametrize("key", ["x" * 256, "tab\there"])
def test_a_bad_idempotency_key_is_400_before_payment(client: httpx.Client, key: str) -> None:
    r = client.post("/api/echo/k", content=b"x", headers={"idempotency-key": key})
    assert r.status_code == 400, r.text
    assert r.json()["field"] == "Idempotency-Key"
    assert "www-authenticate" not in r.headers


def test_a_key_of_255_characters_is_accepted(client: httpx.Client) -> None:
    r = client.post("/api/echo/k", content=b"x", headers={"idempotency-key": "k" * 255})
    assert r.status_code == 402
