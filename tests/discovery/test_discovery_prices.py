"""Price conversion: exact base units from display amounts, Decimal only."""

from __future__ import annotations

from decimal import Decimal, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpp_proxy.discovery.prices import base_units, display_amount


@pytest.mark.parametrize(
    ("amount", "decimals", "expected"),
    [
        ("0.05", 6, 50000),
        ("0.05", 2, 5),
        ("0.001", 6, 1000),
        ("1", 0, 1),
        ("100", 2, 10000),
        ("0.10", 2, 10),
        ("1E+2", 2, 10000),
        ("123456789012345678901234567890.5", 18, 123456789012345678901234567890500000000000000000),
        ("0.000000000000000001", 18, 1),
    ],
)
def test_base_units_are_exact(amount: str, decimals: int, expected: int) -> None:
    assert base_units(Decimal(amount), decimals) == expected


def test_more_places_than_the_currency_has_is_refused() -> None:
    with pytest.raises(ValueError, match="more than 2 decimal places"):
        base_units(Decimal("0.001"), 2)


@pytest.mark.parametrize(
    ("amount", "decimals", "shown"),
    [("0.05", 6, "0.05"), ("2", 6, "2"), ("2", 2, "2.00"), ("0.1", 2, "0.10"), ("7", 0, "7")],
)
def test_display_amount_reads_like_money(amount: str, decimals: int, shown: str) -> None:
    assert display_amount(Decimal(amount), decimals) == shown


@given(
    st.integers(min_value=1, max_value=10**30),
    st.integers(min_value=0, max_value=36),
    st.integers(min_value=0, max_value=36),
)
def test_base_units_round_trip(units: int, decimals: int, places: int) -> None:
    places = min(places, decimals)
    amount = Decimal((0, tuple(int(d) for d in str(units)), -places))  # exact, any length
    with localcontext() as ctx:
        ctx.prec = 200
        expected = amount * Decimal(10) ** decimals
    assert base_units(amount, decimals) == int(expected)
    assert Decimal(display_amount(amount, decimals)) == amount
