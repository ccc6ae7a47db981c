"""Spending guards: a cap per call, a total budget and the hosts a client pays, checked first."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from urllib.parse import urlsplit

from mpp.runtime import ClientMethod

from mpp_proxy.client.errors import PaymentRefused
from mpp_proxy.client.offers import Offer

__all__ = ["SpendingGuard", "parse_amount"]

_DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_amount(value: str | int | Decimal, what: str) -> Decimal:
    """A non-negative display amount ("0.10"); ValueError naming `what` otherwise."""
    if isinstance(value, float):
        raise ValueError(f"{what} must be a decimal string such as '0.10', not a float")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ValueError(f"{what} {value!r} is not a decimal number") from None
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"{what} must be zero or more, got {value}")
    return amount


def _host_port(text: str) -> tuple[str, int | None]:
    """("api.example.com", 443) from "https://api.example.com"; ("h", None) from a bare host."""
    parts = urlsplit(text if "://" in text else "//" + text)
    host = (parts.hostname or "").lower()
    if not host:
        raise ValueError(f"allow_hosts entry {text!r} names no host")
    port = parts.port if parts.port is not None else _DEFAULT_PORTS.get(parts.scheme)
    return host, port


class SpendingGuard:
    """Decides, before anything is signed, whether a 402 may be paid and with which offer.

    `max_amount` caps one payment and `budget` the total over the guard's life, both in the
    display units of the offer's currency ("0.10" is ten cents or 0.10 USDC: use one client per
    currency when that matters). `allow_hosts` lists the hosts (or host:port, or origins) that
    may be paid; None pays any host. Thread-safe: a payment reserves its amount first, so
    concurrent calls cannot overspend together.
    """

    def __init__(
        self,
        *,
        max_amount: str | int | Decimal,
        budget: str | int | Decimal | None = None,
        allow_hosts: Iterable[str] | None = None,
    ) -> None:
        self.max_amount = parse_amount(max_amount, "max_amount")
        self.budget = None if budget is None else parse_amount(budget, "budget")
        self.allow_hosts = None if allow_hosts is None else [_host_port(h) for h in allow_hosts]
        self._spent = Decimal(0)
        self._lock = threading.Lock()

    @property
    def spent(self) -> Decimal:
        """What payments have committed so far (a payment counts once its credential is sent)."""
        with self._lock:
            return self._spent

    @property
    def remaining(self) -> Decimal | None:
        with self._lock:
            return None if self.budget is None else self.budget - self._spent

    def host_allowed(self, url: str) -> bool:
        if self.allow_hosts is None:
            return True
        host, port = _host_port(url)
        return any(h == host and (p is None or p == port) for h, p in self.allow_hosts)

    def choose(
        self,
        offers: Sequence[Offer],
        methods: Sequence[ClientMethod],
        url: str,
        *,
        missing: Mapping[str, str] | None = None,
    ) -> tuple[Offer, ClientMethod]:
        """The first offer (server order) a method pays within the cap and the budget.

        Reserves its amount against the budget: call `release` if no credential is sent after
        all. Raises PaymentRefused saying why no offer fits.
        """
        if not self.host_allowed(url):
            host = urlsplit(url).netloc
            raise PaymentRefused("host", f"refusing to pay {host}: not in allow_hosts", url=url)
        payable = [(o, m) for o in offers for m in methods if _pays(m, o)]
        if not payable:
            offered = ", ".join(f"{o.method} ({o.price})" for o in offers) or "nothing readable"
            hints = [(missing or {})[o.method] for o in offers if o.method in (missing or {})]
            raise PaymentRefused(
                "no_method",
                f"no offer this client can pay: the server offers {offered}"
                + (f"; {hints[0]}" if hints else ""),
                url=url,
            )
        cap = self.max_amount
        within = [(o, m) for o, m in payable if o.amount is not None and o.amount <= cap]
        if not within:
            cheapest = min(payable, key=lambda pair: pair[0].amount or Decimal("Infinity"))[0]
            raise PaymentRefused(
                "max_amount",
                f"refusing to pay {cheapest.price}: above max_amount {format(cap, 'f')}",
                url=url,
            )
        with self._lock:
            for offer, method in within:
                assert offer.amount is not None
                if self.budget is None or self._spent + offer.amount <= self.budget:
                    self._spent += offer.amount
                    return offer, method
            left = format((self.budget or 0) - self._spent, "f")
        raise PaymentRefused(
            "budget",
            f"refusing to pay {within[0][0].price}: the budget has {_plain(left)} left",
            url=url,
        )

    def release(self, offer: Offer) -> None:
        """Give back a reservation whose credential was never sent (signing failed)."""
        if offer.amount is not None:
            with self._lock:
                self._spent -= offer.amount


def _pays(method: ClientMethod, offer: Offer) -> bool:
    if method.key != offer.key:
        return False
    return method.can_handle_challenge is None or method.can_handle_challenge(offer.challenge)


def _plain(text: str) -> str:
    """ "0.005000" -> "0.005", "0.000000" -> "0": a decimal without its trailing zeros."""
    return format(Decimal(text).normalize(), "f")
