"""The gateway's data path: the ASGI callable, the upstream client and pool, header rules."""

from mpp_proxy.core.app import Proxy

__all__ = ["Proxy"]
