"""The ledger's plain-text tables: revenue totals and payment lines."""

from __future__ import annotations

from dataclasses import dataclass

from mpp_proxy.cli.report import (
    currency_decimals,
    display_amount,
    format_payments,
    format_totals,
)
from mpp_proxy.state import PaymentStatus, Totals
from tests.state.state_support import payment

TOTALS = [
    Totals("anthropic", "POST /v1/messages", "usdc", "0x20C0", 1, 7),
    Totals("openai", "POST /v1/chat/completions", "card", "usd", 2, 250),
    Totals("openai", "POST /v1/chat/completions", "usdc", "0x20c0", 2, 2_000_001),
]


def test_display_amount_is_exact_for_any_size() -> None:
    assert display_amount("1500000", 6) == "1.500000"
    assert display_amount(7, 6) == "0.000007"
    assert display_amount(10**40 + 1, 18) == "10000000000000000000000.000000000000000001"
    assert display_amount(250, 2) == "2.50"
    assert display_amount(5, 0) == "5"
    assert display_amount(5, None) == ""
    assert display_amount("not-a-number", 2) == "?"


def test_totals_table_lists_groups_and_a_total_per_currency() -> None:
    text = format_totals(TOTALS, decimals={"0x20c0": 6, "usd": 2})
    lines = text.splitlines()
    assert lines[0].split() == [
        "service", "route", "method", "currency", "count", "amount", "display",
    ]  # fmt: skip
    assert lines[2].split() == ["anthropic", "POST", "/v1/messages", "usdc", "0x20C0", "1", "7",
                                "0.000007"]  # fmt: skip
    assert lines[3].split()[-3:] == ["2", "250", "2.50"]
    totals = [line.split() for line in lines if line.startswith("total")]
    # Currency case differs between rows: each row keeps its own spelling.
    assert ["total", "usd", "2", "250", "2.50"] in totals
    assert ["total", "0x20c0", "2", "2000001", "2.000001"] in totals
    assert ["total", "0x20C0", "1", "7", "0.000007"] in totals


def test_totals_without_decimals_drop_the_display_column() -> None:
    text = format_totals(TOTALS)
    assert "display" not in text
    assert text.splitlines()[2].split()[-1] == "7"


def test_columns_line_up() -> None:
    lines = format_totals(TOTALS, decimals={"usd": 2}).splitlines()
    # Right-aligned amounts end in the same column on every line.
    ends = {len(line) for line in lines if line and not line.startswith("-")}
    assert len(ends) <= 2  # lines with an empty trailing display cell are shorter


def test_payments_table_shows_status_amounts_and_short_key() -> None:
    rows = [
        payment(
            "f" * 64,
            status=PaymentStatus.DELIVERED,
            reference="0xfeed",
            created_at=1_764_000_000.0,
        ),
        payment("k2", status=PaymentStatus.CREDITED, created_at=1_764_000_001.0),
    ]
    text = format_payments(rows, decimals={"0x20c0": 6})
    lines = text.splitlines()
    assert "status" in lines[0] and "reference" in lines[0]
    assert lines[2].split()[:3] == ["2025-11-24", "16:00:00", "delivered"]
    assert "0.001000" in lines[2] and "0xfeed" in lines[2]
    assert lines[2].endswith("f" * 12)
    assert lines[3].split()[2] == "credited"
    assert " - " in lines[3]


def test_empty_ledgers_say_so() -> None:
    assert format_totals([]) == "no delivered payments\n"
    assert format_payments([]) == "no payments\n"


def test_decimals_come_from_configured_methods() -> None:
    @dataclass(frozen=True)
    class Method:
        currency: str
        decimals: int

    assert currency_decimals([Method("usd", 2), Method("0x20c0", 6)]) == {"usd": 2, "0x20c0": 6}
