"""A proxy serving a discovery test config over loopback (uvicorn in a thread), and that config."""

from __future__ import annotations

from decimal import Decimal

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
