"""ASGI target for the crash test: the configured proxy with a short payment lease.

Neither proxy.toml nor proxy.py can set `ProxySettings.lease_seconds` yet (the loaders rebuild
the settings without it), so the crash test embeds the proxy the way `Proxy(config)` allows.
"""

from __future__ import annotations

import os
from dataclasses import replace

from mpp_proxy.config import load_config
from mpp_proxy.core import Proxy

_config = load_config(os.environ["MPP_PROXY_CONFIG"])
app = Proxy(
    replace(
        _config,
        proxy=replace(_config.proxy, lease_seconds=float(os.environ["E2E_LEASE_SECONDS"])),
    )
)
