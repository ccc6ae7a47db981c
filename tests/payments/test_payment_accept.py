"""Accept-Payment parsing and ranking."""

from __future__ import annotations

from mpp_proxy.payments.accept import parse_accept_payment, rank

KEYS = (("tempo", "charge"), ("stripe", "charge"), ("evm", "charge"), ("tempo", "session"))


def test_no_header_keeps_config_order() -> None:
    assert rank(KEYS, None) == (0, 1, 2, 3)


def test_q_values_order_and_zero_excludes() -> None:
    assert rank(KEYS, "stripe/charge;q=0.9, tempo/charge") == (0, 1)
    assert rank(KEYS, "*;q=0.1, evm/charge") == (2, 0, 1, 3)
    assert rank(KEYS, "*, tempo;q=0") == (1, 2)
    assert rank(KEYS, "tempo/*;q=0.5, tempo/session;q=0.8") == (3, 0)
    assert rank(KEYS, "*/charge;q=0.3, stripe/charge;q=0") == (0, 2)


def test_ties_keep_header_order_then_config_order() -> None:
    assert rank(KEYS, "evm/charge, stripe/charge, tempo/charge") == (2, 1, 0)
    assert rank(KEYS, "*") == (0, 1, 2, 3)


def test_everything_excluded_is_empty() -> None:
    assert rank(KEYS, "lightning/charge") == ()
    assert rank(KEYS, "*;q=0") == ()


def test_lenient_parsing() -> None:
    prefs = parse_accept_payment(" Tempo/Charge ; q=0.5 ,, stripe;q=bad, evm;q=2, x ; foo=1")
    assert [(p.name, p.intent, p.q) for p in prefs] == [("tempo", "charge", 0.5), ("x", "*", 1.0)]
    assert rank(KEYS, "TEMPO/CHARGE") == (0,)
