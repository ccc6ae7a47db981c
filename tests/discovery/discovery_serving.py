"""A proxy serving a discovery test config over loopback (uvicorn in a thread), and that config."""

from __future__ import annotations

import socket
import threading
import time
from decimal import Decimal

import uvicorn

from mpp_proxy.config import check_config
from mpp_proxy.config.model import (
    Config,
    Price,
    ProxySettings,
    Route,
    Secret,
    Service,
    StripeMethod,
    TempoMethod,
    TestMoneyMethod,
    Timeouts,
)
from mpp_proxy.core import Proxy

TEMPO_USDC = "0x20C000000000000000000000b9537d11c60E8b50"
RECIPIENT = "0x1111111111111111111111111111111111111111"


def served_config(upstream_url: str) -> Config:
    """Free and paid routes over the upstream's echo endpoints (the upstream never answers 5xx)."""
    play = Price(Decimal("0.05"), ("play",))
    fast = Timeouts(connect=2.0, read=5.0, write=5.0, pool=2.0)
    return check_config(
        Config(
            proxy=ProxySettings(
                secret_key=Secret("discovery-serving-secret-0123456789abcdef"),
                realm="discovery.test",
                state="memory://",
                title="Discovery test gateway",
                allow_test_payments=True,
            ),
            methods=(
                TestMoneyMethod("play"),
                TempoMethod(name="usdc", recipient=RECIPIENT, currency=TEMPO_USDC),
                StripeMethod(name="card", secret_key=Secret("sk_test_unused"), network_id="net_x"),
            ),
            services=(
                Service(
                    id="api",
                    base_url=upstream_url,
                    timeouts=fast,
                    routes=(
                        Route("GET", "/echo/items/:id"),
                        Route("POST", "/echo/items", play, description="Create an item"),
                        Route("PUT", "/echo/items/:id", Price(Decimal("1"), ("play", "usdc"))),
                        Route("GET", "/echo/files/*", play),
                        Route("*", "/echo/any"),
                        Route("*", "/echo/paid-any", Price(Decimal("0.10"), ("play", "card"))),
                    ),
                ),
            ),
        )
    )


class Served:
    """The proxy served by uvicorn (h11, asyncio) on a port-0 loopback socket in a thread."""

    def __init__(self, app: Proxy) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(
            app, lifespan="on", log_level="critical", loop="asyncio", http="h11", ws="none"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> Served:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
