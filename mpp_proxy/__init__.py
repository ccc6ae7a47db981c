"""mpp-proxy: a payment gateway that makes any HTTP API payable per call over HTTP 402 (MPP)."""

__version__ = "0.1.0"
