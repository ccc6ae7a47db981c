"""Prices read from the request, on their own: rule and request in, a price or a 400 out."""

from __future__ import annotations

import json
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from mpp_proxy.config.model import PriceRule, PriceTier
from mpp_proxy.payments.prices import price_for
from mpp_proxy.problems import Problem

D = Decimal
TIERS = (PriceTier(D(10), D("1")), PriceTier(D(100), D("2")))


def field_of(result: object) -> str:
    assert isinstance(result, Problem) and result.status == 400
    return str(json.loads(result.body)["field"])


def test_a_nested_json_field_and_the_default_for_a_missing_one() -> None:
    rule = PriceRule("json:a.b", table=(("x", D("3")),), default=D("9"))
    assert price_for(rule, body=b'{"a": {"b": "x"}}', query="", size=0) == D("3")
    assert price_for(rule, body=b'{"a": {}}', query="", size=0) == D("9")
    assert price_for(rule, body=b'{"a": 1}', query="", size=0) == D("9")
    # A table names strings: a number there is not guessed into one.
    assert field_of(price_for(rule, body=b'{"a": {"b": 1}}', query="", size=0)) == "a.b"


def test_booleans_are_not_numbers_and_null_counts_as_missing() -> None:
    rule = PriceRule("json:n", tiers=TIERS)
    assert field_of(price_for(rule, body=b'{"n": true}', query="", size=0)) == "n"
    assert field_of(price_for(rule, body=b'{"n": null}', query="", size=0)) == "n"


def test_query_tiers_read_the_value_as_a_number_and_refuse_a_repeated_one() -> None:
    rule = PriceRule("query:n", tiers=TIERS, default=D("5"))
    assert price_for(rule, body=b"", query="n=10", size=0) == D("1")
    # Paying for n=10 while the upstream reads n=500 must not be possible.
    assert field_of(price_for(rule, body=b"", query="n=10&n=500", size=0)) == "query:n"
    assert price_for(rule, body=b"", query="n=11", size=0) == D("2")
    assert price_for(rule, body=b"", query="n=1000", size=0) == D("5")
    assert price_for(rule, body=b"", query="", size=0) == D("5")
    assert field_of(price_for(PriceRule("query:n", tiers=TIERS), body=b"", query="n=x", size=0))


@given(st.integers(min_value=0, max_value=10**6))
def test_size_tiers_always_answer_one_of_the_rules_prices(size: int) -> None:
    rule = PriceRule("size", tiers=TIERS, default=D("7"))
    price = price_for(rule, body=b"", query="", size=size)
    assert price in rule.amounts
    assert price == (D("1") if size <= 10 else D("2") if size <= 100 else D("7"))


def test_a_body_naming_a_key_twice_is_refused() -> None:
    rule = PriceRule("json:model", table=(("cheap", D("1")), ("dear", D("9"))))
    body = b'{"model": "cheap", "model": "dear"}'
    assert field_of(price_for(rule, body=body, query="", size=0)) == "model"
    nested = b'{"x": {"a": 1, "a": 2}, "model": "cheap"}'
    assert field_of(price_for(rule, body=nested, query="", size=0)) == "model"
