"""SpendingGuard: the cap, the budget and the hosts decide before anything is signed."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest

from mpp_proxy.client import PaymentRefused, SpendingGuard, parse_offers, tempo, test_money
from mpp_proxy.client.offers import decimals_for
from tests.support.challenges import DEV_KEY, USDC, challenge_header

URL = "http://127.0.0.1:4402/api/x"


def money(amount: int, decimals: int = 6) -> str:
    request = {"amount": str(amount), "currency": "TEST", "methodDetails": {"decimals": decimals}}
    return challenge_header("test", request)


def test_the_first_offer_within_the_cap_is_chosen_and_reserved() -> None:
    guard = SpendingGuard(max_amount="0.05", budget="1")
    offer, method = guard.choose(parse_offers([money(10_000)]), [test_money()], URL)
    assert (offer.amount, method.key) == (Decimal("0.01"), "test/charge")
    assert guard.spent == Decimal("0.01") and guard.remaining == Decimal("0.99")


def test_above_max_amount_is_refused_and_nothing_is_reserved() -> None:
    guard = SpendingGuard(max_amount="0.05")
    with pytest.raises(PaymentRefused) as refused:
        guard.choose(parse_offers([money(60_000)]), [test_money()], URL)
    assert refused.value.reason == "max_amount"
    assert str(refused.value) == "refusing to pay 0.06 TEST: above max_amount 0.05"
    assert guard.spent == 0


def test_the_budget_refuses_the_payment_that_would_exceed_it() -> None:
    guard = SpendingGuard(max_amount="1", budget="0.025")
    offers = parse_offers([money(10_000)])
    guard.choose(offers, [test_money()], URL)
    guard.choose(offers, [test_money()], URL)
    with pytest.raises(PaymentRefused) as refused:
        guard.choose(offers, [test_money()], URL)
    assert refused.value.reason == "budget"
    assert "the budget has 0.005 left" in str(refused.value)
    assert guard.spent == Decimal("0.02")


def test_concurrent_payments_never_overspend_the_budget() -> None:
    guard = SpendingGuard(max_amount="1", budget="0.1")
    offers = parse_offers([money(10_000)])
    won: list[bool] = []

    def pay() -> None:
        try:
            guard.choose(offers, [test_money()], URL)
            won.append(True)
        except PaymentRefused:
            won.append(False)

    threads = [threading.Thread(target=pay) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert won.count(True) == 10 and guard.spent == Decimal("0.1")


def test_a_released_reservation_is_given_back() -> None:
    guard = SpendingGuard(max_amount="1", budget="0.01")
    offer, _ = guard.choose(parse_offers([money(10_000)]), [test_money()], URL)
    guard.release(offer)
    assert guard.spent == 0
    guard.choose(parse_offers([money(10_000)]), [test_money()], URL)


@pytest.mark.parametrize(
    ("allowed", "url", "ok"),
    [
        (["127.0.0.1:4402"], "http://127.0.0.1:4402/x", True),
        (["127.0.0.1:4402"], "http://127.0.0.1:4403/x", False),
        (["127.0.0.1"], "http://127.0.0.1:9/x", True),
        (["https://api.example.com"], "https://api.example.com/v1", True),
        (["https://api.example.com"], "http://api.example.com/v1", False),
        (["api.example.com"], "https://evil.example.com/v1", False),
        (["API.example.com"], "https://api.example.com/v1", True),
        ([], "http://127.0.0.1:4402/x", False),
    ],
)
def test_only_allowed_hosts_are_paid(allowed: list[str], url: str, ok: bool) -> None:
    guard = SpendingGuard(max_amount="1", allow_hosts=allowed)
    offers = parse_offers([money(10_000)])
    if ok:
        guard.choose(offers, [test_money()], url)
    else:
        with pytest.raises(PaymentRefused) as refused:
            guard.choose(offers, [test_money()], url)
        assert refused.value.reason == "host"
        assert guard.spent == 0


def test_an_offer_no_method_pays_says_what_the_server_takes() -> None:
    tempo_offer = challenge_header(
        "tempo", {"amount": "50000", "currency": USDC, "recipient": "0x" + "11" * 20}
    )
    guard = SpendingGuard(max_amount="1")
    with pytest.raises(PaymentRefused) as refused:
        guard.choose(parse_offers([tempo_offer]), [test_money()], URL, missing={"tempo": "set X"})
    assert refused.value.reason == "no_method"
    assert str(refused.value) == (
        "no offer this client can pay: the server offers tempo (0.05 USDC); set X"
    )


def test_a_tempo_price_never_reads_smaller_than_six_decimals_allow() -> None:
    # A server claiming 18 decimals for a 6-decimal token would make 1 USDC read 0.000000000001.
    request = {"amount": "1000000", "currency": USDC, "recipient": "0x" + "11" * 20,
               "methodDetails": {"chainId": 4217, "decimals": 18}}  # fmt: skip
    lying = challenge_header("tempo", request)
    guard = SpendingGuard(max_amount="0.10")
    with pytest.raises(PaymentRefused) as refused:
        guard.choose(parse_offers([lying]), [tempo(DEV_KEY, chain_id=4217)], URL)
    assert "refusing to pay 1 USDC" in str(refused.value)


@pytest.mark.parametrize(
    ("method", "request_", "decimals"),
    [
        ("stripe", {"currency": "usd"}, 2),
        ("stripe", {"currency": "JPY"}, 0),
        ("stripe", {"currency": "kwd", "decimals": 9}, 3),
        ("evm", {"methodDetails": {"decimals": 18}}, 6),
        ("evm", {}, 6),
        ("test", {"methodDetails": {"decimals": 2}}, 2),
        ("unknown", {}, 0),
    ],
)
def test_decimals_are_capped_by_what_the_method_can_have(
    method: str, request_: dict[str, object], decimals: int
) -> None:
    assert decimals_for(method, request_) == decimals


@pytest.mark.parametrize("bad", ["-1", "abc", "NaN", 0.1])
def test_guard_amounts_must_be_decimal_strings(bad: object) -> None:
    with pytest.raises(ValueError, match="max_amount"):
        SpendingGuard(max_amount=bad)  # type: ignore[arg-type]
