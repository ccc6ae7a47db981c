"""The payment transports for httpx2 clients: the OpenAI (3.x) and Anthropic (2.x) SDKs use httpx2.

    import httpx2
    from anthropic import Anthropic
    from mpp_proxy.client.httpx2 import PaymentTransport

    transport = PaymentTransport([test_money()], max_amount="0.05")
    client = Anthropic(base_url=..., api_key="-", http_client=httpx2.Client(transport=transport))

Same arguments and behaviour as mpp_proxy.client.PaymentTransport and AsyncPaymentTransport;
needs the httpx2 package (which those SDKs install).
"""

from __future__ import annotations

import httpx2

from mpp_proxy.client.transport import AsyncPaying, HttpKit, SyncPaying

__all__ = ["AsyncPaymentTransport", "PaymentTransport"]

HTTPX2 = HttpKit(
    httpx2.Headers,
    httpx2.Request,
    httpx2.Response,
    httpx2.ByteStream,
    httpx2.HTTPTransport,
    httpx2.AsyncHTTPTransport,
    httpx2.SyncByteStream,
    httpx2.AsyncByteStream,
)


class PaymentTransport(SyncPaying, httpx2.BaseTransport):
    """A sync httpx2 transport that pays 402 challenges within its spending guard."""

    kit = HTTPX2


class AsyncPaymentTransport(AsyncPaying, httpx2.AsyncBaseTransport):
    """An async httpx2 transport that pays 402 challenges within its spending guard."""

    kit = HTTPX2
