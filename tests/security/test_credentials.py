"""Replayed and tampered credentials through the served proxy (test money), beyond tests/e2e.

tests/e2e already pins, for every method: replay (403), a lower amount in the echoed challenge
(402), a credential for another route or query (402), expiry (402), a method the route does not
offer (400) and a re-encoded copy (403). Here: moving a credential between the two headers it
may travel in, tampering with every other field of the echoed challenge, a credential minted by
another proxy (another secret key), another HTTP method on an any-method route, and a replay
pipelined on the same connection.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from mpp_proxy.client.testmoney import pay_challenge
from tests.e2e.harness import b64decode, b64encode, credential_doc, credential_value
from tests.security.evil_upstream import EvilUpstream
from tests.security.gateway import OTHER_SECRET, UPSTREAM_KEY, gateway_process
from tests.security.wire import exchange, request
from tests.support.proxy_process import ProxyProcess
from tests.support.upstream import Upstream

PAID = "/api/echo/paid/item"


@pytest.fixture(scope="module")
def client(gateway: ProxyProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway.url, timeout=20) as c:
        yield c


def buy(client: httpx.Client, path: str = PAID, method: str = "GET") -> str:
    """A fresh, unused credential for exactly (method, path)."""
    first = client.request(method, path)
    assert first.status_code == 402, first.text
    return pay_challenge(first.headers.get_list("www-authenticate"))


def slug(response: httpx.Response) -> str:
    return str(response.json().get("type", "")).rsplit("/", 1)[-1]


def test_a_paid_request_reaches_the_upstream_once_with_only_the_injected_credential(
    client: httpx.Client, upstream: Upstream
) -> None:
    credential = buy(client)
    before = upstream.requests
    ok = client.get(PAID, headers={"authorization": credential, "payment-receipt": "forged"})
    assert ok.status_code == 200, ok.text
    assert "payment-receipt" in ok.headers
    names = {k.lower(): v for k, v in ok.json()["raw_headers"]}
    assert names["x-api-key"] == UPSTREAM_KEY
    assert not {"authorization", "payment-authorization", "payment-receipt"} & set(names)
    assert upstream.requests - before == 1


@pytest.mark.parametrize(
    ("first", "second"),
    [("authorization", "payment-authorization"), ("payment-authorization", "authorization")],
)
def test_a_used_credential_moved_to_the_other_header_is_still_a_replay(
    first: str, second: str, client: httpx.Client, upstream: Upstream
) -> None:
    credential = buy(client)
    assert client.get(PAID, headers={first: credential}).status_code == 200
    before = upstream.requests
    again = client.get(PAID, headers={second: credential})
    assert again.status_code == 403, again.text
    assert "payment-receipt" not in again.headers
    assert upstream.requests == before


def test_a_used_credential_in_payment_authorization_is_not_excused_by_a_fresh_one_beside_it(
    client: httpx.Client, upstream: Upstream
) -> None:
    used = buy(client)
    assert client.get(PAID, headers={"authorization": used}).status_code == 200
    fresh = buy(client)
    before = upstream.requests
    both = client.get(PAID, headers={"payment-authorization": used, "authorization": fresh})
    # Payment-Authorization wins and is a replay; the fresh credential was not spent.
    assert both.status_code == 403, both.text
    assert upstream.requests == before
    assert client.get(PAID, headers={"authorization": fresh}).status_code == 200


def edit_request(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(challenge: dict[str, Any]) -> None:
        request_doc = json.loads(b64decode(challenge["request"]))
        request_doc[field] = value
        challenge["request"] = b64encode(json.dumps(request_doc, separators=(",", ":")).encode())

    return edit


def edit_scope(resource: str) -> Callable[[dict[str, Any]], None]:
    def edit(challenge: dict[str, Any]) -> None:
        request_doc = json.loads(b64decode(challenge["request"]))
        request_doc["_mppx_scope"]["resource"] = resource
        challenge["request"] = b64encode(json.dumps(request_doc, separators=(",", ":")).encode())

    return edit


def set_field(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(challenge: dict[str, Any]) -> None:
        challenge[field] = value

    return edit


TAMPERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "amount raised to look like a dearer route": edit_request("amount", "100"),
    "amount zero": edit_request("amount", "0"),
    "currency": edit_request("currency", "USD"),
    "scope names the route it is presented on": edit_scope("/api/echo/paid/other"),
    "realm": set_field("realm", "evil.example"),
    "expiry pushed a year out": set_field("expires", "2099-01-01T00:00:00Z"),
    "challenge id": set_field("id", "A" * 43),
    "opaque nonce": set_field("opaque", b64encode(b'{"_mpp_nonce":"00"}')),
    "intent": set_field("intent", "session"),
}


@pytest.mark.parametrize("field", list(TAMPERS))
def test_any_tampered_field_of_the_echoed_challenge_is_refused_and_spends_nothing(
    field: str, client: httpx.Client, upstream: Upstream
) -> None:
    credential = buy(client)
    doc = credential_doc(credential)
    TAMPERS[field](doc["challenge"])
    tampered = credential_value(doc)
    assert tampered != credential
    before = upstream.requests

    refused = client.get(PAID, headers={"authorization": tampered})

    assert refused.status_code in (400, 402), refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    assert "payment-receipt" not in refused.headers
    assert upstream.requests == before
    # Nothing was spent: the untouched credential still pays, once.
    assert client.get(PAID, headers={"authorization": credential}).status_code == 200


@pytest.fixture(scope="module")
def other_gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: Upstream, evil: EvilUpstream
) -> Iterator[ProxyProcess]:
    """The same config served by a second instance with another secret key."""
    folder = tmp_path_factory.mktemp("other")
    with gateway_process(folder, upstream.url, evil.url, secret=OTHER_SECRET) as g:
        yield g


def test_a_credential_minted_by_a_proxy_with_another_secret_is_refused(
    other_gateway: ProxyProcess, client: httpx.Client, upstream: Upstream
) -> None:
    with httpx.Client(base_url=other_gateway.url, timeout=20) as other:
        foreign = buy(other)
        before = upstream.requests
        refused = client.get(PAID, headers={"authorization": foreign})
        assert refused.status_code == 402, refused.text
        assert slug(refused) == "invalid-challenge"
        assert refused.headers.get_list("www-authenticate"), "a fresh challenge to pay instead"
        assert upstream.requests == before
        # It was never spent here, so it still pays where it was bought.
        assert other.get(PAID, headers={"authorization": foreign}).status_code == 200


def test_a_credential_bought_for_get_does_not_open_post_on_an_any_method_route(
    client: httpx.Client, upstream: Upstream
) -> None:
    path = "/openai/v1/chat/completions"
    credential = buy(client, path, "GET")
    before = upstream.requests
    refused = client.post(path, headers={"authorization": credential}, content=b"{}")
    assert refused.status_code == 402, refused.text
    assert upstream.requests == before
    assert client.get(path, headers={"authorization": credential}).status_code == 200


def test_a_credential_pipelined_twice_on_one_connection_is_served_once(
    client: httpx.Client, gateway: ProxyProcess, upstream: Upstream
) -> None:
    credential = buy(client)
    before = upstream.requests
    one = request("GET", PAID, f"Authorization: {credential}")
    result = exchange(gateway.port, one + one, quiet=0.6)
    assert result.statuses == [200, 403], result.raw[:2000]
    assert upstream.requests - before == 1
