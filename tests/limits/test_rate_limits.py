"""Rate limits and spend caps, served: exact counts, the fields a client sees, and nothing
charged for a refusal (a credential sent while limited is not verified and stays usable)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from limits_support import PAID, ledger_row, pay, proxy_toml, serving, wait_for

from mpp_proxy.client.testmoney import pay_challenge
from mpp_proxy.state import PaymentStatus
from tests.support.upstream import Upstream

DELIVERED = PaymentStatus.DELIVERED
PAYER_A = "did:pkh:eip155:1:0x00000000000000000000000000000000000000aa"
PAYER_B = "did:pkh:eip155:1:0x00000000000000000000000000000000000000bb"


def assert_limited(r: httpx.Response) -> int:
    """A 429 as the draft fields say it; returns its Retry-After."""
    assert r.status_code == 429, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith("/rate-limited")
    assert "www-authenticate" not in r.headers  # a limited request is not issued a challenge
    wait = int(r.headers["retry-after"])
    assert wait >= 1
    assert f";r=0;t={wait}" in r.headers["ratelimit"]
    assert "ratelimit-policy" in r.headers
    return wait


def test_over_10_per_minute_30_requests_let_exactly_10_reach_the_upstream(
    tmp_path: Path, upstream: Upstream
) -> None:
    routes = '"GET /echo/*" = { limits = [{ rate = "10/minute", key = "ip" }] }'
    with serving(tmp_path, proxy_toml(routes, url=upstream.url)) as (_, client):
        before = upstream.requests
        answers = [client.get(f"/api/echo/{n}") for n in range(30)]
        assert upstream.requests - before == 10
        assert [r.status_code for r in answers] == [200] * 10 + [429] * 20
        first = answers[0].headers
        assert first["ratelimit-policy"] == '"ip";q=10;w=60'
        assert first["ratelimit"].startswith('"ip";r=9;t=')
        assert answers[9].headers["ratelimit"].startswith('"ip";r=0;')
        waits = [assert_limited(r) for r in answers[10:]]
        # One request more is allowed every 6 s: honouring Retry-After succeeds.
        assert all(1 <= w <= 6 for w in waits)
        time.sleep(waits[-1])
        again = client.get("/api/echo/after")
        assert again.status_code == 200
        assert upstream.requests - before == 11


def test_a_credential_sent_while_limited_is_not_verified_and_is_accepted_once_later(
    tmp_path: Path, upstream: Upstream
) -> None:
    # Three at once, then one every 2 s.
    routes = f'"GET /echo/*" = {{ {PAID}, limits = [{{ rate = "3/6s", key = "ip" }}] }}'
    with serving(tmp_path, proxy_toml(routes, url=upstream.url)) as (app, client):
        url = "/api/echo/paid"
        credential = pay(client, url)  # the 402 counts as one request
        asked = client.get(url)
        assert asked.status_code == 402
        assert asked.headers["ratelimit"].startswith('"ip";r=1;')  # allowed answers carry it
        assert client.get(url).status_code == 402
        before = upstream.requests
        limited = client.get(url, headers={"Authorization": credential})
        wait = assert_limited(limited)
        # Decided before payment: the credential never reached the gate.
        assert ledger_row(app, credential) is None
        assert upstream.requests == before
        time.sleep(wait)
        paid = client.get(url, headers={"Authorization": credential})
        assert paid.status_code == 200, paid.text
        assert "payment-receipt" in paid.headers
        assert paid.headers["ratelimit"].startswith('"ip";r=0;')
        assert wait_for(lambda: getattr(ledger_row(app, credential), "status", None) == DELIVERED)
        # Accepted once: sent again (once the limit allows it) it is refused as used.
        time.sleep(assert_limited(client.get(url, headers={"Authorization": credential})))
        used = client.get(url, headers={"Authorization": credential})
        assert used.status_code == 403, used.text
        assert upstream.requests == before + 1


def test_payer_limits_count_each_claimed_payer_and_requests_without_one_by_ip(
    tmp_path: Path, upstream: Upstream
) -> None:
    # Behind a trusted proxy (the test client on loopback), X-Forwarded-For names the client.
    routes = f'"GET /echo/*" = {{ {PAID}, limits = [{{ rate = "1/minute", key = "payer" }}] }}'
    text = proxy_toml(routes, url=upstream.url, proxy='trusted_proxies = ["127.0.0.1/32"]')
    with serving(tmp_path, text) as (app, client):
        url = "/api/echo/p"

        def get(ip: str, credential: str | None = None) -> httpx.Response:
            headers = {"X-Forwarded-For": ip}
            if credential is not None:
                headers["Authorization"] = credential
            return client.get(url, headers=headers)

        def challenge(ip: str) -> list[str]:
            r = get(ip)
            assert r.status_code == 402, r.text
            return r.headers.get_list("www-authenticate")

        c1, c2, c3 = (challenge(f"198.51.100.{n}") for n in (1, 2, 3))
        assert_limited(get("198.51.100.1"))  # without a credential: by ip, and that ip is over
        # With a credential: by the payer it claims, whatever the address.
        assert get("198.51.100.1", pay_challenge(c1, PAYER_A)).status_code == 200
        second_a = pay_challenge(c2, PAYER_A)
        assert_limited(get("198.51.100.2", second_a))
        assert ledger_row(app, second_a) is None
        assert get("198.51.100.3", pay_challenge(c3, PAYER_B)).status_code == 200


def test_limit_headers_false_keeps_allowed_answers_plain_but_not_429s(
    tmp_path: Path, upstream: Upstream
) -> None:
    routes = (
        '"GET /echo/*" = { limits = [{ rate = "1/minute", key = "route", name = "all" }], '
        "limit_headers = false }"
    )
    with serving(tmp_path, proxy_toml(routes, url=upstream.url)) as (_, client):
        allowed = client.get("/api/echo/a")
        assert allowed.status_code == 200
        assert "ratelimit" not in allowed.headers
        limited = client.get("/api/echo/b")
        assert_limited(limited)
        assert limited.headers["ratelimit-policy"] == '"all";q=1;w=60'


def test_a_header_keyed_limit_counts_each_value_and_falls_back_to_ip(
    tmp_path: Path, upstream: Upstream
) -> None:
    routes = '"GET /echo/*" = { limits = [{ rate = "1/minute", key = "header:X-Team" }] }'
    with serving(tmp_path, proxy_toml(routes, url=upstream.url)) as (_, client):
        assert client.get("/api/echo/1", headers={"X-Team": "red"}).status_code == 200
        assert_limited(client.get("/api/echo/2", headers={"X-Team": "red"}))
        assert client.get("/api/echo/3", headers={"X-Team": "blue"}).status_code == 200
        assert client.get("/api/echo/4").status_code == 200  # no header: by ip
        assert_limited(client.get("/api/echo/5"))


def test_service_and_route_limits_both_apply_and_a_refusal_charges_neither(
    tmp_path: Path, upstream: Upstream
) -> None:
    routes = (
        '"GET /echo/a" = { limits = [{ rate = "1/minute", name = "a" }] }\n"GET /echo/b" = "free"'
    )
    service = 'limits = [{ rate = "2/minute", key = "route", name = "each-route" }]'
    text = proxy_toml(routes, url=upstream.url, service=service)
    with serving(tmp_path, text) as (_, client):
        assert client.get("/api/echo/a").status_code == 200
        refused = client.get("/api/echo/a")
        assert_limited(refused)
        assert refused.json()["policy"] == "a"
        # The refused request did not use the service's bucket for /echo/a: one is left.
        fields = refused.headers["ratelimit"]
        assert '"each-route";r=1;' in fields
        b = client.get("/api/echo/b")
        assert b.headers["ratelimit-policy"] == '"each-route";q=2;w=60'


def test_a_spend_cap_refuses_the_call_that_would_go_over_and_says_when_it_resets(
    tmp_path: Path, upstream: Upstream
) -> None:
    # 0.05 per call, at most 0.10 a day per payer: two calls.
    routes = f'"GET /echo/*" = {{ {PAID}, max_spend = {{ amount = "0.10", per = "day" }} }}'
    with serving(tmp_path, proxy_toml(routes, url=upstream.url)) as (app, client):
        for n in range(2):
            url = f"/api/echo/{n}"
            ok = client.get(url, headers={"Authorization": pay(client, url, PAYER_A)})
            assert ok.status_code == 200, ok.text
        url = "/api/echo/third"
        credential = pay(client, url, PAYER_A)
        capped = client.get(url, headers={"Authorization": credential})
        assert capped.status_code == 429, capped.text
        doc = capped.json()
        assert doc["type"].endswith("/spend-cap-reached")
        midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        assert doc["resetsAt"] == (midnight + timedelta(days=1)).isoformat().replace("+00:00", "Z")
        assert int(capped.headers["retry-after"]) == doc["retryAfter"] > 0
        assert ledger_row(app, credential) is None  # not verified, not charged
        # Another payer has its own cap.
        other = client.get(url, headers={"Authorization": pay(client, url, PAYER_B)})
        assert other.status_code == 200
