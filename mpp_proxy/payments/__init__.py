"""The payment gate over pympp: 402 challenges, verification, receipts, credits and the ledger."""

from mpp_proxy.payments.gate import Authorization, Denial, PaidRequest, PaymentGate

__all__ = ["Authorization", "Denial", "PaidRequest", "PaymentGate"]
