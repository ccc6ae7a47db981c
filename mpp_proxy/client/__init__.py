"""What a paying agent imports: httpx transports that pay 402s within spending guards.

    from mpp_proxy.client import PaymentTransport, tempo, test_money

    transport = PaymentTransport([test_money()], max_amount="0.10", budget="1.00")
    client = httpx.Client(transport=transport)   # or OpenAI(http_client=...), Anthropic(...)

AsyncPaymentTransport is the same for httpx.AsyncClient and the async SDKs. Nothing here imports
the gateway's server side: a client installs mpp-proxy and uses only this package.
"""

from __future__ import annotations

from mpp_proxy.client.errors import PaymentRefused
from mpp_proxy.client.guard import SpendingGuard
from mpp_proxy.client.methods import (
    PRIVATE_KEY_ENV,
    RPC_URL_ENV,
    InvalidKey,
    Wallet,
    address_of,
    tempo,
    test_money,
    wallet_from_env,
)
from mpp_proxy.client.offers import Offer, parse_offers
from mpp_proxy.client.receipts import PaidCall, Receipt, decode_receipt
from mpp_proxy.client.transport import PAYMENT_EXTENSION, AsyncPaymentTransport, PaymentTransport

__all__ = [
    "PAYMENT_EXTENSION",
    "PRIVATE_KEY_ENV",
    "RPC_URL_ENV",
    "AsyncPaymentTransport",
    "InvalidKey",
    "Offer",
    "PaidCall",
    "PaymentRefused",
    "PaymentTransport",
    "Receipt",
    "SpendingGuard",
    "Wallet",
    "address_of",
    "decode_receipt",
    "parse_offers",
    "tempo",
    "test_money",
    "wallet_from_env",
]
