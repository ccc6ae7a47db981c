"""An operator's tools on a served gateway: `ledger` (filters, JSON, CSV, totals per day),
`credits list|void`, and the admin API (404 to anyone not let in; reload vetted like SIGHUP)."""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cli_harness import run_cli

from mpp_proxy.client import PAYMENT_EXTENSION, PaymentTransport, test_money
from mpp_proxy.state import PaymentStatus
from tests.support.proxy_process import ProxyProcess
from tests.support.upstream import Upstream

SECRET = "operator-tests-secret-0123456789abcdef"
TOKEN = "admin-token-0123456789abcdef0123456789"
CONFIG = """
[proxy]
secret_key = "{secret}"
state = "sqlite:///state.db"
allow_test_payments = true

[proxy.admin]
bearer_token = "${{ADMIN_TOKEN}}"

[methods.play]
kind = "test"
settlement = "before"  # settled first, a failed request's payment is a credit: what these test

[services.api]
base_url = "{upstream}"

[services.api.routes]
"GET /echo/free" = "free"
"GET /echo/paid" = {{ price = "{price}" }}
"GET /status/:code" = {{ price = "0.02" }}

[services.other]
base_url = "{upstream}"

[services.other.routes]
"GET /echo/paid" = {{ price = "0.03" }}
"""


@dataclass
class Gateway:
    served: ProxyProcess
    config: Path
    upstream: Upstream

    @property
    def url(self) -> str:
        return self.served.url

    def write(self, **values: str) -> None:
        fill = {"secret": SECRET, "upstream": self.upstream.url, "price": "0.01", **values}
        self.config.write_text(CONFIG.format(**fill), encoding="utf-8")

    def cli(self, *args: str) -> tuple[int, str, str]:
        result = run_cli(
            *args, "--config", str(self.config), cwd=self.config.parent, env={"ADMIN_TOKEN": TOKEN}
        )
        return result.code, result.out, result.err


def admin(method: str, url: str, token: str | None = TOKEN, **kw: object) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.request(method, url, headers=headers, timeout=30, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    folder = tmp_path_factory.mktemp("operator")
    with Upstream() as upstream:
        gw = Gateway(None, folder / "proxy.toml", upstream)  # type: ignore[arg-type]
        gw.write()
        served = ProxyProcess.serve(
            "--config", str(gw.config), folder=folder, env={"ADMIN_TOKEN": TOKEN}
        )
        with served:
            gw.served = served
            transport = PaymentTransport([test_money()], max_amount="1")
            with httpx.Client(transport=transport, base_url=served.url) as client:
                for path in ("/api/echo/paid", "/api/echo/paid", "/other/echo/paid"):
                    assert client.get(path).status_code == 200
                assert client.get("/api/status/503").status_code == 503  # kept as a credit
            yield gw


def test_ledger_json_lists_every_payment_with_display_amounts(gateway: Gateway) -> None:
    code, out, err = gateway.cli("ledger", "--json")
    assert code == 0, err
    doc = json.loads(out)
    rows = doc["payments"]
    assert {(p["service"], p["route"], p["status"]) for p in rows} == {
        ("api", "GET /echo/paid", "delivered"),
        ("other", "GET /echo/paid", "delivered"),
        ("api", "GET /status/:code", "credited"),
    }
    assert len(rows) == 4
    paid = next(p for p in rows if p["service"] == "other")
    assert (paid["amount"], paid["display"], paid["currency"]) == ("30000", "0.030000", "TEST")
    assert paid["created_at_iso"].endswith("Z")
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert doc["days"] == [{"day": today, "currency": "TEST", "count": 3, "amount": "50000"}]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--service", "other"], {("other", "delivered")}),
        (["--route", "GET  /status/:code"], {("api", "credited")}),
        (["--status", "credited"], {("api", "credited")}),
        (["--service", "api", "--status", "delivered"], {("api", "delivered")}),
        (["--since", "2000-01-01"], {("api", "delivered"), ("other", "delivered"),
                                     ("api", "credited")}),
    ],
)  # fmt: skip
def test_ledger_filters(gateway: Gateway, args: list[str], expected: set[tuple[str, str]]) -> None:
    code, out, err = gateway.cli("ledger", "--json", *args)
    assert code == 0, err
    assert {(p["service"], p["status"]) for p in json.loads(out)["payments"]} == expected


def test_ledger_since_a_future_day_finds_nothing_and_bad_filters_exit_2(gateway: Gateway) -> None:
    code, out, _ = gateway.cli("ledger", "--json", "--since", "2999-01-01T00:00:00Z")
    assert code == 0 and json.loads(out) == {"state": "sqlite:///state.db", "payments": [],
                                             "days": []}  # fmt: skip
    assert gateway.cli("ledger", "--since", "yesterday")[0] == 2
    code, _, err = gateway.cli("ledger", "--status", "paid")
    assert code == 2 and "use one of " + ", ".join(PaymentStatus) in err


def test_ledger_csv_has_a_header_and_a_line_per_payment(gateway: Gateway) -> None:
    code, out, err = gateway.cli("ledger", "--csv", "--status", "delivered")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 3
    assert {r["display"] for r in rows} == {"0.010000", "0.030000"}
    assert all(r["reference"].startswith("test_") for r in rows)


def test_ledger_text_shows_revenue_per_day(gateway: Gateway) -> None:
    code, out, err = gateway.cli("ledger")
    assert code == 0, err
    days = out.split("revenue per day (UTC)\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert days[2].split() == [time.strftime("%Y-%m-%d", time.gmtime()), "TEST", "3", "50000",
                               "0.050000"]  # fmt: skip


def test_admin_api_is_404_to_anyone_without_the_token(gateway: Gateway) -> None:
    unknown = httpx.get(f"{gateway.url}/admin/no-such-endpoint")
    assert unknown.status_code == 404
    for method, path in [
        ("GET", "/admin/payments"),
        ("GET", "/admin/credits"),
        ("GET", "/admin/config"),
        ("POST", "/admin/reload"),
        ("POST", "/admin/credits/0123456789ab/void"),
    ]:
        for token in (None, "wrong-token", TOKEN[:-1], TOKEN + "x"):
            answer = admin(method, gateway.url + path, token)
            assert answer.status_code == 404, (method, path, token)
            # Word for word what an unknown path gets: nothing says an admin API is there.
            assert answer.content == unknown.content
            assert answer.headers["content-type"] == "application/problem+json"


def test_admin_payments_and_credits_answer_with_the_token(gateway: Gateway) -> None:
    payments = admin("GET", f"{gateway.url}/admin/payments?service=api&status=delivered")
    assert payments.status_code == 200 and payments.headers["cache-control"] == "no-store"
    assert [p["service"] for p in payments.json()["payments"]] == ["api", "api"]
    limited = admin("GET", f"{gateway.url}/admin/payments?limit=1").json()["payments"]
    assert len(limited) == 1
    credits = admin("GET", f"{gateway.url}/admin/credits").json()["credits"]
    assert [c["route"] for c in credits] == ["GET /status/:code"]
    bad = admin("GET", f"{gateway.url}/admin/payments?status=paid")
    assert bad.status_code == 400
    assert admin("DELETE", f"{gateway.url}/admin/payments").status_code == 405


def test_admin_config_shows_the_config_without_a_secret(gateway: Gateway) -> None:
    answer = admin("GET", f"{gateway.url}/admin/config")
    assert answer.status_code == 200
    text = answer.text
    assert SECRET not in text and TOKEN not in text
    doc = answer.json()
    assert doc["proxy"]["secret_key"] == "***"
    assert doc["proxy"]["admin"] == {"bearer_token": "***", "allow": ["127.0.0.1/32", "::1/128"]}
    routes = {r["pattern"]: r["price"] for r in doc["services"][0]["routes"]}
    # A fixed price: no rule reading it from the request.
    assert routes["/echo/paid"] == {"amount": "0.01", "pay_with": ["play"], "rule": None}


def _credit(gateway: Gateway) -> tuple[str, str]:
    """A fresh credit: (its ledger key, the credential that bought it)."""
    transport = PaymentTransport([test_money()], max_amount="1")
    with httpx.Client(transport=transport, base_url=gateway.url) as client:
        answer = client.get("/api/status/502")
    paid = answer.extensions[PAYMENT_EXTENSION]
    credits = admin("GET", f"{gateway.url}/admin/credits").json()["credits"]
    key = next(c["key"] for c in credits if c["reference"] == answer.json()["credit"]["reference"])
    return key, paid.credential


def _present(gateway: Gateway, credential: str) -> httpx.Response:
    return httpx.get(f"{gateway.url}/api/status/502", headers={"Authorization": credential})


def test_a_credit_voided_with_the_cli_is_no_longer_redeemable(gateway: Gateway) -> None:
    key, credential = _credit(gateway)
    code, out, err = gateway.cli("credits", "list")
    assert code == 0 and key[:12] in out, err
    code, out, err = gateway.cli("credits", "void", key[:12], "--reason", "refunded by hand",
                                 "--by", "ops")  # fmt: skip
    assert code == 0, err
    assert "voided credit" in out and "voided by ops at " in out and "refunded by hand" in out
    before = gateway.upstream.requests
    refused = _present(gateway, credential)
    assert refused.status_code == 403
    assert refused.json()["type"].endswith("/credit-voided")
    assert "refunded by hand" in refused.json()["detail"]
    assert gateway.upstream.requests == before  # nothing forwarded
    code, out, _ = gateway.cli("ledger", "--json", "--status", "voided")
    row = next(p for p in json.loads(out)["payments"] if p["key"] == key)
    assert row["note"].startswith("voided by ops at ") and row["credit_until"] == 0
    assert key[:12] not in gateway.cli("credits", "list")[1]
    code, _, err = gateway.cli("credits", "void", key[:12], "--reason", "twice")
    assert code == 1 and "no credited with a key starting" in err


def test_a_credit_voided_through_the_admin_api_is_no_longer_redeemable(gateway: Gateway) -> None:
    key, credential = _credit(gateway)
    url = f"{gateway.url}/admin/credits/{key}/void"
    assert admin("POST", url, json={"by": "support"}).status_code == 400  # no reason
    voided = admin("POST", url, json={"by": "support", "reason": "chargeback"})
    assert voided.status_code == 200, voided.text
    assert voided.json()["voided"]["status"] == "voided"
    assert _present(gateway, credential).status_code == 403
    again = admin("POST", url, json={"reason": "again"})
    assert again.status_code == 404 and again.json()["type"].endswith("/no-such-credit")


def test_reload_through_the_admin_api_is_vetted_like_sighup(gateway: Gateway) -> None:
    def price() -> str:
        doc = httpx.get(f"{gateway.url}/openapi.json").json()
        offers = doc["paths"]["/api/echo/paid"]["get"]["x-payment-info"]["offers"]
        return str(offers[0]["amount"])

    assert price() == "10000"
    gateway.write(price="not-a-price")
    refused = admin("POST", f"{gateway.url}/admin/reload")
    assert refused.status_code == 422
    assert "reload refused, still serving the previous config" in refused.json()["detail"]
    assert "price 'not-a-price' is not a decimal number" in refused.json()["detail"]
    assert price() == "10000"  # the old config still serves
    gateway.write(price="0.04")
    accepted = admin("POST", f"{gateway.url}/admin/reload")
    assert accepted.status_code == 202 and accepted.json()["status"] == "reloading"
    # The serve process respawns the worker: the new one starts, the old one (which may still
    # answer meanwhile) stops 1 s later.
    deadline = time.monotonic() + 60
    while "Stopped old worker" not in gateway.served.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [price() for _ in range(5)] == ["40000"] * 5


def test_the_admin_token_never_reaches_the_logs(gateway: Gateway) -> None:
    admin("GET", f"{gateway.url}/admin/payments")
    admin("GET", f"{gateway.url}/admin/payments", "wrong-token")
    assert TOKEN not in gateway.served.output()
