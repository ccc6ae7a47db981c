"""A spend cap compiled for a route: which counter it reads, the allowance this route's price
leaves under the cap, and how a delivered payment is added to it."""

from __future__ import annotations

from mpp_proxy.config.checks import base_units
from mpp_proxy.config.model import SpendCap
from mpp_proxy.limits.keys import KeyReader
from mpp_proxy.limits.windows import window


class SpendPolicy:
    __slots__ = ("allowance", "cap", "currency", "key", "limit", "prefix", "shown")

    def __init__(self, cap: SpendCap, price: int, scope: str, index: int) -> None:
        assert cap.currency is not None and cap.decimals is not None  # resolved at load
        self.cap = cap
        self.currency = cap.currency
        self.limit = base_units(cap.amount, cap.decimals)
        # Refused when what was spent plus this call's price would go over the cap.
        self.allowance = self.limit - price
        self.key = KeyReader(cap.key)
        self.prefix = f"{scope}|spend{index}|{cap.per}|{cap.key}|"
        self.shown = format(cap.amount.normalize(), "f")

    def counter(self, value: str, now: float) -> tuple[str, int]:
        """The counter of `value` in the window holding `now`, and when that window ends."""
        start, end = window(self.cap.per, now)
        return f"{self.prefix}{value}|{start}", end
