"""Prices are exact Decimals: any valid one round-trips, every invalid one is rejected."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpp_proxy.config import ConfigError, charge, make_config
from mpp_proxy.config.checks import decimal_places, parse_price
from mpp_proxy.config.methods import test_money
from mpp_proxy.config.presets import service

_valid = st.decimals(
    min_value=Decimal("0.000001"), max_value=Decimal("1000000"), places=6, allow_nan=False
)


def _build(price: str | Decimal, decimals: int = 6) -> Decimal:
    method = test_money("t", decimals=decimals)
    api = service("api", base_url="http://127.0.0.1:1", routes={"POST /x": charge(price, method)})
    config = make_config(secret_key="k" * 32, methods=[method], services=[api])
    route_price = config.services[0].routes[0].price
    assert route_price is not None
    return route_price.amount


@given(_valid)
def test_any_decimal_string_round_trips_exactly(amount: Decimal) -> None:
    assert _build(format(amount, "f")) == amount


@given(_valid)
def test_decimal_objects_round_trip_exactly(amount: Decimal) -> None:
    assert _build(amount) == amount


@given(_valid, st.integers(min_value=0, max_value=6))
def test_price_fits_the_currency_iff_its_places_fit(amount: Decimal, decimals: int) -> None:
    fits = decimal_places(amount) <= decimals
    try:
        _build(format(amount, "f"), decimals)
    except ConfigError as exc:
        assert not fits
        assert "decimal places" in exc.problem
    else:
        assert fits


@given(st.decimals(allow_nan=True, allow_infinity=True))
def test_non_finite_and_negative_prices_are_rejected(amount: Decimal) -> None:
    if amount.is_finite() and amount > 0:
        return
    with pytest.raises(ConfigError):
        parse_price(str(amount))


@given(st.text(max_size=12))
def test_arbitrary_text_is_a_valid_price_or_a_config_error(text: str) -> None:
    try:
        amount = parse_price(text)
    except ConfigError:
        return
    assert amount > 0 and amount.is_finite()
    assert amount == Decimal(text.strip())


@given(st.floats(allow_nan=True))
def test_floats_are_always_rejected(value: float) -> None:
    with pytest.raises(ConfigError, match="inexact"):
        parse_price(value)


def test_trailing_zeros_do_not_count_as_places() -> None:
    assert _build("0.050", decimals=2) == Decimal("0.05")
    assert decimal_places(Decimal("100")) == 0
