"""Prices from the request, settlement timing and on_failure: loaded, and refused by name."""

from __future__ import annotations

from decimal import Decimal

import pytest
from config_samples import Writer

from mpp_proxy.config import ConfigError, load_config
from mpp_proxy.config.model import PriceTier
from mpp_proxy.config.terms import refunds, settle_timing

HEAD = """
[proxy]
secret_key = "terms-test-hmac-secret-0123456789abcdef"
[methods.play]
kind = "test"
decimals = 3
[methods.card]
kind = "stripe"
secret_key = "sk_test_x"
network_id = "n"
"""


def toml(routes: str, methods: str = "") -> str:
    return (
        f'{HEAD}{methods}[services.api]\nbase_url = "http://127.0.0.1:9"\n'
        f"[services.api.routes]\n{routes}\n"
    )


def error(write: Writer, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(write(text), {})
    return info.value


def test_a_table_price_loads_with_its_lowest_amount_and_every_price_point(write: Writer) -> None:
    text = toml(
        '"POST /v1/chat" = { pay_with = ["play"], price = { from = "json:model", table = '
        '{ "gpt-4o" = "0.05", "gpt-4o-mini" = "0.005" }, default = "0.02" } }'
    )
    [route] = load_config(write(text), {}).services[0].routes
    assert route.price is not None and route.price.rule is not None
    rule = route.price.rule
    assert rule.source == "json:model" and rule.body_field == "model"
    assert dict(rule.table) == {"gpt-4o": Decimal("0.05"), "gpt-4o-mini": Decimal("0.005")}
    assert route.price.amount == Decimal("0.005")
    assert rule.amounts == (Decimal("0.005"), Decimal("0.02"), Decimal("0.05"))


def test_tiers_on_a_json_field_a_query_parameter_and_the_body_size_load(write: Writer) -> None:
    tiers = '[{ upto = 1000, price = "0.01" }, { upto = 4000, price = "0.03" }]'
    paid = 'pay_with = ["play"], price'
    text = toml(
        f'"POST /a" = {{ {paid} = {{ from = "json:max_tokens", tiers = {tiers} }} }}\n'
        f'"GET /b" = {{ {paid} = {{ from = "query:n", tiers = {tiers} }} }}\n'
        f'"PUT /c" = {{ {paid} = {{ from = "size", tiers = {tiers}, default = "1" }} }}'
    )
    routes = load_config(write(text), {}).services[0].routes
    rules = [r.price.rule for r in routes if r.price is not None]
    assert [r.source for r in rules if r is not None] == ["json:max_tokens", "query:n", "size"]
    assert rules[0] is not None and rules[0].tiers == (
        PriceTier(Decimal(1000), Decimal("0.01")),
        PriceTier(Decimal(4000), Decimal("0.03")),
    )


@pytest.mark.parametrize(
    ("price", "key", "words"),
    [
        ('{ from = "json:model", table = { a = "cheap" } }', "price.table.a", "not a decimal"),
        ('{ from = "header:x", table = { a = "1" } }', "price.from", "unknown price source"),
        ('{ from = "json:", table = { a = "1" } }', "price.from", "names no valid field"),
        ('{ from = "json:model" }', "price", "either table"),
        (
            '{ from = "json:n", tiers = [{ upto = 10, price = "1" }, { upto = 5, price = "2" }] }',
            "price.tiers[1].upto",
            "out of order or overlap",
        ),
        (
            '{ from = "json:n", tiers = [{ upto = 10, price = "1" }, { upto = 10, price = "2" }] }',
            "price.tiers[1].upto",
            "overlap",
        ),
        ('{ from = "size", table = { a = "1" } }', "price.table", "tiers, not a table"),
        ('{ from = "json:n", tiers = [{ upto = 10 }] }', "price.tiers[0]", "upto and price"),
        ('{ from = "json:n", table = { a = "1" }, default = 0.5 }', "price.default", "floats"),
        ('{ from = "json:n", table = { a = "1" }, cost = "1" }', "price.cost", "unknown key"),
    ],
)
def test_a_bad_price_rule_names_file_service_route_and_key(
    write: Writer, price: str, key: str, words: str
) -> None:
    err = error(write, toml(f'"POST /v1/chat" = {{ pay_with = ["play"], price = {price} }}'))
    assert (err.service, err.route, err.key) == ("api", "POST /v1/chat", key), err
    assert words in err.problem, err.problem
    assert err.file is not None and err.file.endswith("proxy.toml")
    assert err.line is not None


def test_a_price_point_finer_than_the_currency_is_refused(write: Writer) -> None:
    rule = '{ from = "json:m", table = { a = "1.0001" } }'
    err = error(write, toml(f'"POST /x" = {{ pay_with = ["play"], price = {rule} }}'))
    assert (err.route, err.key) == ("POST /x", "price") and "decimal places" in err.problem


def test_settle_after_on_stripe_is_refused_on_a_route_and_on_the_method(write: Writer) -> None:
    err = error(write, toml('"GET /x" = { price = "1", pay_with = ["card"], settle = "after" }'))
    assert (err.service, err.route, err.key) == ("api", "GET /x", "settle")
    assert "cannot settle after" in err.problem and "refund" in err.problem
    text = toml('"GET /x" = { price = "1", pay_with = ["play"] }').replace(
        'network_id = "n"', 'network_id = "n"\nsettlement = "after"'
    )
    err = error(write, text)
    assert err.key == "methods.card.settlement" and "cannot settle after" in err.problem


def test_on_failure_refund_on_a_method_without_refunds_is_refused(write: Writer) -> None:
    err = error(
        write, toml('"GET /x" = { price = "1", pay_with = ["play"], on_failure = "refund" }')
    )
    assert (err.service, err.route, err.key) == ("api", "GET /x", "on_failure")
    assert "cannot" in err.problem and "test" in err.problem


@pytest.mark.parametrize(
    ("extra", "key"),
    [('settle = "later"', "settle"), ('on_failure = "keep"', "on_failure")],
)
def test_unknown_settle_and_on_failure_values_are_refused(
    write: Writer, extra: str, key: str
) -> None:
    err = error(write, toml(f'"GET /x" = {{ price = "1", pay_with = ["play"], {extra} }}'))
    assert (err.route, err.key) == ("GET /x", key) and "must be one of" in err.problem


def test_timing_defaults_after_where_the_method_validates_and_routes_override(
    write: Writer,
) -> None:
    text = toml(
        '"GET /a" = { price = "1", pay_with = ["play"] }\n'
        '"GET /b" = { price = "1", pay_with = ["play"], settle = "before" }\n'
        '"GET /c" = { price = "1", pay_with = ["card"], on_failure = "refund" }\n'
        '"GET /d" = { price = "1", pay_with = ["card"] }'
    )
    config = load_config(write(text), {})
    a, b, c, d = config.services[0].routes
    play, card = config.method("play"), config.method("card")
    assert [settle_timing(a, play), settle_timing(b, play), settle_timing(d, card)] == [
        "after",
        "before",
        "before",
    ]
    assert (refunds(c, card), refunds(d, card)) == (True, False)
    text = text.replace('network_id = "n"', 'network_id = "n"\non_failure = "refund"')
    assert refunds(load_config(write(text), {}).services[0].routes[3], card) is False
    reloaded = load_config(write(text), {})
    assert refunds(reloaded.services[0].routes[3], reloaded.method("card")) is True


def test_replay_settings_load_from_proxy_toml(write: Writer) -> None:
    text = toml('"GET /x" = "free"').replace(
        "[proxy]\n", '[proxy]\nreplay_ttl = 60\nreplay_max_bytes = "4096"\n'
    )
    proxy = load_config(write(text), {}).proxy
    assert (proxy.replay_ttl, proxy.replay_max_bytes) == (60.0, 4096)
