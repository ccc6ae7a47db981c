"""Settling after the upstream answered, through the served proxy and a loopback upstream; and
prices read from the request (table, tiers, size, query), with the body digest bound."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from core_harness import Served, service

from mpp_proxy.client.testmoney import pay_challenge
from mpp_proxy.config.model import (
    Config,
    Price,
    PriceRule,
    PriceTier,
    ProxySettings,
    Route,
    Secret,
    TestMoneyMethod,
    Timeouts,
)
from mpp_proxy.core import Proxy
from mpp_proxy.state import Payment, PaymentStatus, open_store
from tests.e2e.harness import ledger as rows
from tests.support.play_money import challenge_id, settle_elsewhere
from tests.support.upstream import Upstream

D = Decimal
PRICE = Price(D("0.05"), ("play",))
MODEL = PriceRule(
    "json:model", table=(("gpt-4o", D("0.05")), ("gpt-4o-mini", D("0.01"))), default=D("0.02")
)
TOKENS = PriceRule(
    "json:options.max_tokens", tiers=(PriceTier(D(1000), D("0.01")), PriceTier(D(4000), D("0.03")))
)
SIZE = PriceRule("size", tiers=(PriceTier(D(100), D("0.01")),), default=D("0.10"))
QUERY = PriceRule("query:size", table=(("s", D("0.01")), ("l", D("0.04"))))


def priced(rule: PriceRule) -> Price:
    return Price(min(rule.amounts), ("play",), rule)


def settle_config(base_url: str, down_url: str, state: str) -> Config:
    settings = ProxySettings(
        secret_key=Secret("core-settle-test-secret-0123456789abcdef"),
        realm="core.test",
        state=state,
        allow_test_payments=True,
    )
    routes = (
        Route("GET", "/echo/*", PRICE),
        Route("GET", "/status/:code", PRICE),
        Route("GET", "/sleep", PRICE),
        Route("GET", "/reset-mid-body", PRICE),
        Route("POST", "/echo/chat", priced(MODEL), max_body_bytes=4096),
        Route("POST", "/echo/complete", priced(TOKENS)),
        Route("PUT", "/echo/upload", priced(SIZE)),
        Route("POST", "/echo/stream", PRICE),
        Route("GET", "/echo-sized", priced(QUERY)),
    )
    fast = Timeouts(connect=1.0, read=1.0, write=2.0, pool=1.0)
    return Config(
        proxy=settings,
        methods=(TestMoneyMethod("play", decimals=2),),
        services=(
            service("api", base_url, routes=routes, timeouts=fast),
            service("down", down_url, routes=(Route("GET", "/*", PRICE),), timeouts=fast),
        ),
    )


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('settle') / 'state.db'}"


@pytest.fixture(scope="module")
def client(upstream: Upstream, closed_port: int, state: str) -> Iterator[httpx.Client]:
    app = Proxy(settle_config(upstream.url, f"http://127.0.0.1:{closed_port}", state))
    with Served(app) as s, httpx.Client(base_url=s.url, timeout=10) as c:
        yield c


def row_of(state: str, challenge_id: str) -> Payment:
    [row] = [r for r in rows(state) if r.challenge_id == challenge_id]
    return row


def pay(client: httpx.Client, method: str, url: str, **kw: Any) -> str:
    r = client.request(method, url, **kw)
    assert r.status_code == 402, r.text
    return pay_challenge(r.headers.get_list("www-authenticate"))


def amount_asked(response: httpx.Response) -> str:
    [value] = response.headers.get_list("www-authenticate")
    request = value.split('request="', 1)[1].split('"', 1)[0]
    doc = json.loads(base64.urlsafe_b64decode(request + "=" * (-len(request) % 4)))
    return str(doc["amount"])


def claimed(state: str, cid: str) -> bool:
    async def read() -> bool:
        store = open_store(state)
        await store.open()
        try:
            return await store.get("mpp-proxy:test-money:" + cid) is not None
        finally:
            await store.close()

    return asyncio.run(read())


# ------------------------------------------------------------------------------ settle after


def test_a_success_settles_before_the_head_and_carries_the_receipt(
    client: httpx.Client, state: str
) -> None:
    credential = pay(client, "GET", "/api/echo/ok")
    r = client.get("/api/echo/ok", headers={"authorization": credential})
    assert r.status_code == 200 and "payment-receipt" in r.headers
    row = row_of(state, challenge_id(credential))
    assert row.status is PaymentStatus.DELIVERED and row.reference.startswith("test_")
    assert claimed(state, challenge_id(credential))


@pytest.mark.parametrize(
    ("url", "status", "reason"),
    [
        ("/api/status/500", 500, "upstream-status"),
        ("/api/sleep?s=3", 504, "upstream-timeout"),
    ],
)
def test_an_upstream_failure_before_settlement_charges_nothing(
    client: httpx.Client, state: str, url: str, status: int, reason: str
) -> None:
    credential = pay(client, "GET", url)
    r = client.get(url, headers={"authorization": credential})
    assert r.status_code == status, r.text
    assert "payment-receipt" not in r.headers
    doc = r.json()
    assert doc["type"].endswith("/payment-not-charged") and doc["reason"] == reason
    assert "validUntil" in doc["credential"]
    cid = challenge_id(credential)
    assert row_of(state, cid).status is PaymentStatus.RELEASED
    assert not claimed(state, cid), "the test-money payment was settled"


def test_an_unreachable_upstream_is_502_before_the_credential_is_even_read(
    client: httpx.Client, state: str
) -> None:
    # A paid request takes its upstream connection at admit, before the pay stage: the
    # credential is neither validated nor claimed, and stays good for a later try.
    credential = pay(client, "GET", "/down/x")
    r = client.get("/down/x", headers={"authorization": credential})
    assert r.status_code == 502, r.text
    assert r.json()["type"].endswith("/upstream-unreachable")
    assert "payment-receipt" not in r.headers
    cid = challenge_id(credential)
    assert [row for row in rows(state) if row.challenge_id == cid] == []
    assert not claimed(state, cid), "the test-money payment was settled"


def test_a_released_credential_is_served_again_and_settles_once(
    client: httpx.Client, state: str
) -> None:
    url = "/api/echo/retry?n=1"
    credential = pay(client, "GET", url)
    cid = challenge_id(credential)
    # A stand-in for a failed first attempt: release through the status route is covered
    # above; here the retry of a released claim is checked end to end.
    first = client.get("/api/status/503", headers={"authorization": credential})
    assert first.status_code == 402  # bought for another request
    ok = client.get(url, headers={"authorization": credential})
    assert ok.status_code == 200
    assert row_of(state, cid).status is PaymentStatus.DELIVERED
    assert client.get(url, headers={"authorization": credential}).status_code == 403


def test_a_settlement_refused_after_the_upstream_answered_is_402_and_discards_the_answer(
    client: httpx.Client, state: str
) -> None:
    url = "/api/sleep?s=0.6"
    credential = pay(client, "GET", url)
    cid = challenge_id(credential)
    answers: list[httpx.Response] = []
    thread = threading.Thread(
        target=lambda: answers.append(client.get(url, headers={"authorization": credential}))
    )
    thread.start()
    # While the upstream works, the same challenge gets settled elsewhere (another process).
    for _ in range(200):
        if any(r.status is PaymentStatus.PENDING for r in rows(state) if r.challenge_id == cid):
            break
    asyncio.run(settle_elsewhere(state, cid))
    thread.join(10)
    [r] = answers
    assert r.status_code == 402, r.text
    assert "payment-receipt" not in r.headers
    assert r.headers.get_list("www-authenticate")
    assert "slept" not in r.text
    assert "settling the payment was refused" in r.json()["detail"]
    assert row_of(state, cid).status is PaymentStatus.SETTLE_FAILED


def test_a_reset_after_settlement_keeps_the_payment_as_a_credit(
    client: httpx.Client, state: str
) -> None:
    url = "/api/reset-mid-body?n=1000000"
    credential = pay(client, "GET", url)
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.get(url, headers={"authorization": credential})
    cid = challenge_id(credential)
    for _ in range(200):
        row = row_of(state, cid)
        if row.status is not PaymentStatus.IN_FLIGHT:
            break
    assert row.status is PaymentStatus.CREDITED and row.reference.startswith("test_")


# ------------------------------------------------------------------------------ prices


def test_a_table_price_follows_the_body_and_binds_its_digest(client: httpx.Client) -> None:
    cheap = json.dumps({"model": "gpt-4o-mini", "messages": []}).encode()
    dear = json.dumps({"model": "gpt-4o", "messages": []}).encode()
    other = json.dumps({"model": "other"}).encode()
    assert amount_asked(client.post("/api/echo/chat", content=cheap)) == "1"
    assert amount_asked(client.post("/api/echo/chat", content=dear)) == "5"
    assert amount_asked(client.post("/api/echo/chat", content=other)) == "2"  # the default
    r = client.post("/api/echo/chat", content=cheap)
    assert 'digest="sha-256=' in r.headers["www-authenticate"]
    credential = pay_challenge(r.headers.get_list("www-authenticate"))
    # Paid for gpt-4o-mini, sent gpt-4o: refused with a fresh challenge at the right price.
    swapped = client.post("/api/echo/chat", content=dear, headers={"authorization": credential})
    assert swapped.status_code == 402 and "payment-receipt" not in swapped.headers
    assert amount_asked(swapped) == "5"
    # Same price, another body: the digest refuses it too.
    same_price = json.dumps({"model": "gpt-4o-mini", "messages": ["hi"]}).encode()
    sneaky = client.post(
        "/api/echo/chat", content=same_price, headers={"authorization": credential}
    )
    assert sneaky.status_code == 402
    assert "another request body" in sneaky.json()["detail"]
    ok = client.post("/api/echo/chat", content=cheap, headers={"authorization": credential})
    assert ok.status_code == 200 and ok.json()["body"] == cheap.decode()


def test_a_body_price_reads_a_streamed_body_whole_within_the_limit(client: httpx.Client) -> None:
    body = json.dumps({"model": "gpt-4o", "pad": "x" * 3000}).encode()

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 500):
            yield body[i : i + 500]

    r = client.post("/api/echo/chat", content=chunks())
    assert r.status_code == 402 and amount_asked(r) == "5"
    credential = pay_challenge(r.headers.get_list("www-authenticate"))
    ok = client.post("/api/echo/chat", content=chunks(), headers={"authorization": credential})
    assert ok.status_code == 200 and ok.json()["body_len"] == len(body)
    big = client.post("/api/echo/chat", content=b"{" + b" " * 5000 + b"}")
    assert big.status_code == 413


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (b"not json", "options.max_tokens", "not JSON"),
        (b'{"options": {}}', "options.max_tokens", "missing"),
        (b'{"options": {"max_tokens": "many"}}', "options.max_tokens", "must be a number"),
        (b'{"options": {"max_tokens": 9000}}', "options.max_tokens", "up to 4000"),
    ],
)
def test_a_request_whose_price_cannot_be_read_is_400_naming_the_field(
    client: httpx.Client, body: bytes, field: str, words: str
) -> None:
    r = client.post("/api/echo/complete", content=body)
    assert r.status_code == 400, r.text
    doc = r.json()
    assert doc["field"] == field and words in doc["detail"]
    assert "www-authenticate" not in r.headers


def test_tiers_price_a_numeric_field(client: httpx.Client) -> None:
    small = client.post("/api/echo/complete", json={"options": {"max_tokens": 1000}})
    large = client.post("/api/echo/complete", json={"options": {"max_tokens": 1001}})
    assert (amount_asked(small), amount_asked(large)) == ("1", "3")


def test_size_tiers_price_the_body_length(client: httpx.Client) -> None:
    assert amount_asked(client.put("/api/echo/upload", content=b"x" * 100)) == "1"
    assert amount_asked(client.put("/api/echo/upload", content=b"x" * 101)) == "10"
    credential = pay(client, "PUT", "/api/echo/upload", content=b"x" * 50)
    ok = client.put("/api/echo/upload", content=b"y" * 50, headers={"authorization": credential})
    assert ok.status_code == 200  # the size is what was paid for; no digest binds the bytes
    bigger = pay(client, "PUT", "/api/echo/upload", content=b"x" * 50)
    r = client.put("/api/echo/upload", content=b"x" * 500, headers={"authorization": bigger})
    assert r.status_code == 402


def test_a_query_parameter_table_prices_the_request(client: httpx.Client) -> None:
    assert amount_asked(client.get("/api/echo-sized?size=l")) == "4"
    r = client.get("/api/echo-sized?size=xl")
    assert r.status_code == 400 and r.json()["field"] == "query:size"


def test_a_fixed_price_upload_still_streams(client: httpx.Client, upstream: Upstream) -> None:
    body = b"z" * (256 * 1024)
    credential = pay(client, "POST", "/api/echo/stream", content=body)

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 16 * 1024):
            yield body[i : i + 16 * 1024]

    ok = client.post(
        "/api/echo/stream",
        content=chunks(),
        headers={"authorization": credential, "content-length": str(len(body))},
    )
    assert ok.status_code == 200 and ok.json()["body_len"] == len(body)


def test_the_state_file_is_sqlite(state: str) -> None:
    assert Path(state.removeprefix("sqlite:///")).exists()
