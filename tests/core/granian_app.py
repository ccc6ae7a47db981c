"""ASGI target for the granian tests: a Proxy in front of the CORE_TEST_UPSTREAM upstream."""

from __future__ import annotations

import os

from mpp_proxy.config.model import Config, ProxySettings, Route, Service, Timeouts
from mpp_proxy.core import Proxy

app = Proxy(
    Config(
        proxy=ProxySettings(state="memory://"),
        services=(
            Service(
                id="up",
                base_url=os.environ["CORE_TEST_UPSTREAM"],
                routes=(Route(method="*", pattern="/*"),),
                timeouts=Timeouts(connect=2.0, read=10.0, write=10.0, pool=5.0),
            ),
        ),
    )
)
