"""PaymentRefused: the client would not pay, and says why, before anything was signed."""

from __future__ import annotations

__all__ = ["PaymentRefused"]


class PaymentRefused(Exception):
    """A 402 this client did not pay: above a cap, over budget, a host not allowed, no method.

    `reason` is one of "max_amount", "budget", "host", "no_method"; `url` the request's URL.
    Nothing was signed or sent: no money moved.
    """

    def __init__(self, reason: str, message: str, *, url: str = "") -> None:
        self.reason = reason
        self.url = url
        super().__init__(message)
