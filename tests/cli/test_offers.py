"""Choosing what `pay` pays: offers decoded from real challenges, the cap, the wallet."""

from __future__ import annotations

from decimal import Decimal

import pytest

from mpp_proxy.cli.failure import Failure
from mpp_proxy.cli.pay import build_wallet, choose_offer
from mpp_proxy.cli.wire import offer_lines, parse_offers
from tests.support.challenges import DEV_KEY, USDC, challenge_header

TEMPO = challenge_header(
    "tempo",
    {"amount": "50000", "currency": USDC, "recipient": "0x" + "11" * 20,
     "methodDetails": {"chainId": 4217}},
)  # fmt: skip
TEST = challenge_header(
    "test", {"amount": "5", "currency": "TEST", "methodDetails": {"decimals": 2}}
)


def test_offers_are_priced_in_display_units() -> None:
    tempo, test = parse_offers([TEMPO, TEST])
    assert (tempo.method, tempo.amount, tempo.label) == ("tempo", Decimal("0.05"), "USDC")
    assert (test.method, test.amount, test.price) == ("test", Decimal("0.05"), "0.05 TEST")
    assert any(line.startswith("request.recipient") for line in offer_lines(tempo))


def test_two_challenges_in_one_header_are_both_read() -> None:
    assert [o.method for o in parse_offers([f"{TEMPO}, {TEST}"])] == ["tempo", "test"]


def test_without_a_key_tempo_offers_are_skipped_for_test_money(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MPP_PRIVATE_KEY", raising=False)
    offer, _ = choose_offer(parse_offers([TEMPO, TEST]), build_wallet(None), only=None,
                            cap=Decimal(1))  # fmt: skip
    assert offer.method == "test"


def test_with_a_key_the_first_offer_within_the_cap_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPP_PRIVATE_KEY", DEV_KEY)
    wallet = build_wallet("http://127.0.0.1:8545")
    offer, method = choose_offer(parse_offers([TEMPO, TEST]), wallet, only=None, cap=Decimal(1))
    assert offer.method == "tempo"
    assert method.name == "tempo"


def test_only_tempo_without_a_key_says_how_to_enable_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MPP_PRIVATE_KEY", raising=False)
    with pytest.raises(Failure) as caught:
        choose_offer(parse_offers([TEMPO]), build_wallet(None), only="tempo", cap=Decimal(1))
    assert "--method tempo needs $MPP_PRIVATE_KEY" in caught.value.line
    assert "export MPP_PRIVATE_KEY=" in caught.value.line


def test_every_offer_above_the_cap_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MPP_PRIVATE_KEY", DEV_KEY)
    with pytest.raises(Failure) as caught:
        choose_offer(parse_offers([TEMPO, TEST]), build_wallet(None), only=None,
                     cap=Decimal("0.049"))  # fmt: skip
    assert "refusing to pay 0.05" in caught.value.line
    assert "above --max-amount 0.049" in caught.value.line


def test_a_402_without_payment_challenges_is_explained() -> None:
    with pytest.raises(Failure) as caught:
        choose_offer(parse_offers(['Bearer realm="x"']), build_wallet(None), only=None,
                     cap=Decimal(1))  # fmt: skip
    assert "no Payment challenge" in caught.value.line


def test_a_server_cannot_shrink_a_tempo_price_under_the_cap_with_decimals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The transfer is `amount` base units of a 6-decimal TIP-20 token whatever the server says:
    # claiming 12 decimals must not make 1 USDC read as 0.000001 and slip under --max-amount.
    inflated = challenge_header(
        "tempo",
        {"amount": "1000000", "currency": USDC, "recipient": "0x" + "11" * 20,
         "methodDetails": {"chainId": 4217, "decimals": 12}},
    )  # fmt: skip
    (offer,) = parse_offers([inflated])
    assert offer.amount == Decimal(1)
    monkeypatch.setenv("MPP_PRIVATE_KEY", DEV_KEY)
    with pytest.raises(Failure, match="above --max-amount"):
        choose_offer([offer], build_wallet(None), only=None, cap=Decimal("0.10"))
