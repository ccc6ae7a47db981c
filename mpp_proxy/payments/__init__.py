"""The pay stage: 402 challenges, credential checks, settlement through pympp, the ledger."""

from mpp_proxy.payments.authorization import Authorization, NotDelivered
from mpp_proxy.payments.credentials import (
    PAYMENT_REQUEST_HEADERS,
    PaidRequest,
    claimed_payer,
    has_credential,
)
from mpp_proxy.payments.gate import PaymentGate
from mpp_proxy.payments.offers import RouteOffers

__all__ = [
    "PAYMENT_REQUEST_HEADERS",
    "Authorization",
    "NotDelivered",
    "PaidRequest",
    "PaymentGate",
    "RouteOffers",
    "claimed_payer",
    "has_credential",
]
