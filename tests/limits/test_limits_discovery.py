"""Discovery tells the truth about limits: 429 and 503 are declared on exactly the operations
that can answer them, with the limits themselves in `x-rate-limit` / `x-spend-limit` and in
llms.txt; and what a limited operation answers is what it declares."""

from __future__ import annotations

from pathlib import Path

from limits_support import PAID, proxy_toml, serving
from openapi_spec_validator import validate

from tests.support.upstream import Upstream

ROUTES = "\n".join(
    [
        '"GET /echo/limited" = { limits = [{ rate = "1/minute", key = "ip" }] }',
        '"GET /echo/plain" = "free"',
        f'"GET /echo/paid" = {{ {PAID}, max_spend = {{ amount = "1.00", per = "hour" }} }}',
    ]
)


def test_429_and_503_are_declared_only_where_they_can_be_answered(
    tmp_path: Path, upstream: Upstream
) -> None:
    with serving(tmp_path, proxy_toml(ROUTES, url=upstream.url)) as (_, client):
        document = client.get("/openapi.json").json()
        validate(document)
        ops = {path: item["get"] for path, item in document["paths"].items()}
        limited, plain, paid = (ops[f"/api/echo/{n}"] for n in ("limited", "plain", "paid"))
        assert "429" in limited["responses"] and "503" not in limited["responses"]
        assert "429" not in plain["responses"] and "503" not in plain["responses"]
        # Paid: a spend cap (429), and its connection is taken before payment (503).
        assert {"429", "503"} <= set(paid["responses"])
        assert limited["x-rate-limit"] == [
            {
                "policy": "ip",
                "rate": "1/minute",
                "quota": 1,
                "window": 60.0,
                "burst": 1,
                "key": "ip",
                "scope": "route",
            }
        ]
        assert paid["x-spend-limit"][0]["amount"] == "1.00"
        assert paid["x-spend-limit"][0]["per"] == "hour"
        assert "x-rate-limit" not in plain
        # What the limited operation answers over its limit is what it declares.
        client.get("/api/echo/limited")
        refused = client.get("/api/echo/limited")
        assert str(refused.status_code) in limited["responses"]
        llms = client.get("/llms.txt").text
        assert "- `GET /api/echo/limited`: free. Limits: 1/minute by client address." in llms
        assert "at most 1.00 TEST per hour" in llms
        assert "## Limits" in llms


def test_a_service_with_a_capacity_rule_declares_503_on_every_route(
    tmp_path: Path, upstream: Upstream
) -> None:
    text = proxy_toml('"GET /echo/x" = "free"', url=upstream.url, service="max_in_flight = 4")
    with serving(tmp_path, text) as (_, client):
        op = client.get("/openapi.json").json()["paths"]["/api/echo/x"]["get"]
        assert "503" in op["responses"] and "429" not in op["responses"]
