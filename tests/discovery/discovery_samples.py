"""Configs for the discovery tests: a known config with a distinctive value in every secret."""

from __future__ import annotations

from decimal import Decimal

from mpp_proxy.config import check_config
from mpp_proxy.config.model import (
    BasicAuth,
    BearerAuth,
    Capacity,
    Config,
    EvmMethod,
    HeaderAuth,
    Limits,
    Price,
    PriceRule,
    ProxySettings,
    RateLimit,
    Route,
    Secret,
    Service,
    SpendCap,
    StripeMethod,
    TempoMethod,
    TestMoneyMethod,
)

TEMPO_USDC = "0x20C000000000000000000000b9537d11c60E8b50"
BASE_USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
RECIPIENT = "0x1111111111111111111111111111111111111111"
EVM_RECIPIENT = "0x2222222222222222222222222222222222222222"

# Every value here is private: none may appear in /openapi.json or /llms.txt. Hex where the
# model expects a key; plain markers elsewhere. URLs carry a marker in host, path and userinfo.
SECRETS = {
    "hmac": "SECRET-HMAC-KEY-q7x1b9v3m2k8d5z0w4y6",
    "fee_payer": "0x" + "5e" * 32,
    "stripe_key": "sk_test_SECRET-STRIPE-KEY-a81c",
    "openai_key": "sk-SECRET-OPENAI-KEY-77f3",
    "weather_key": "SECRET-WEATHER-KEY-19de",
    "files_user": "SECRET-FILES-USER-0b2a",
    "files_password": "SECRET-FILES-PASSWORD-c4e1",
    "rpc": "SECRET-RPC-TOKEN-3f9a",
    "facilitator": "SECRET-FACILITATOR-TOKEN-66b0",
    "stripe_base": "SECRET-STRIPE-BASE-8d21",
    "redis": "SECRET-REDIS-PASSWORD-2c7e",
    "upstream_openai": "secret-upstream-openai-5a10",
    "upstream_weather": "secret-upstream-weather-e3b8",
    "upstream_files": "secret-upstream-files-91cd",
    "ca_bundle": "SECRET-CA-BUNDLE-PATH-40aa",
}


def known_config() -> Config:
    """A config touching every discovery feature: all method kinds, params, tails, "*" routes."""
    s = SECRETS
    methods = (
        TempoMethod(
            name="usdc",
            recipient=RECIPIENT,
            currency=TEMPO_USDC,
            chain_id=4217,
            rpc_url=f"https://{s['rpc']}.rpc.example/v1/{s['rpc']}",
            fee_payer_key=Secret(s["fee_payer"]),
        ),
        StripeMethod(
            name="card",
            secret_key=Secret(s["stripe_key"]),
            network_id="net_example_123",
            api_base=f"https://{s['stripe_base']}.example",
        ),
        EvmMethod(
            name="base",
            currency=BASE_USDC,
            recipient=EVM_RECIPIENT,
            chain_id=8453,
            facilitator_url=f"https://user:{s['facilitator']}@facilitator.example/",
        ),
        TestMoneyMethod(name="play"),
    )
    services = (
        Service(
            id="openai",
            base_url=f"https://{s['upstream_openai']}.example",
            title="OpenAI",
            description="Chat completions and embeddings.",
            auth=BearerAuth(Secret(s["openai_key"])),
            routes=(
                Route("GET", "/v1/models"),
                Route(
                    "POST",
                    "/v1/chat/completions",
                    Price(Decimal("0.05"), ("usdc", "card")),
                    description="Chat completion",
                ),
                Route(
                    "POST",
                    "/v1/embeddings",
                    Price(Decimal("0.001"), ("usdc", "base")),
                    limits=Limits(
                        rates=(RateLimit(60, 60.0, 10, "payer", "", "60/minute"),),
                        spend=(SpendCap(Decimal("5.00"), "day", "payer", "usdc"),),
                    ),
                ),
                Route(
                    "POST",
                    "/v1/responses",
                    Price(
                        Decimal("0.01"),
                        ("usdc", "card"),
                        PriceRule(
                            "json:model",
                            table=(("gpt-4o", Decimal("0.05")), ("gpt-4o-mini", Decimal("0.01"))),
                            default=Decimal("0.02"),
                        ),
                    ),
                    description="Response, priced by model",
                ),
            ),
        ),
        Service(
            id="weather",
            base_url=f"https://{s['upstream_weather']}.example/api",
            description="Forecasts by city.",
            auth=HeaderAuth("x-api-key", Secret(s["weather_key"])),
            capacity=Capacity(max_in_flight=10, queue=5),
            routes=(
                Route(
                    "GET",
                    "/v1/forecast/:city",
                    Price(Decimal("0.001"), ("usdc",)),
                    description="Forecast for one city",
                ),
                Route("GET", "/v1/forecast/:city/days/:n", Price(Decimal("2"), ("usdc", "card"))),
            ),
        ),
        Service(
            id="files",
            base_url=f"https://{s['upstream_files']}.example",
            title="Files",
            auth=BasicAuth(Secret(s["files_user"]), Secret(s["files_password"])),
            ca_bundle=f"/etc/{s['ca_bundle']}.pem",
            routes=(
                Route("GET", "/v1/files/:id"),
                Route(
                    "DELETE",
                    "/v1/files/:id",
                    Price(Decimal("0.10"), ("play",)),
                    limits=Limits(
                        rates=(RateLimit(10, 1.0, 10, "header:x-team", "", "10/second"),)
                    ),
                ),
                # Shares its first segment with the :id routes: documented one segment further.
                Route(
                    "GET",
                    "/v1/files/*",
                    Price(Decimal("0.01"), ("play",)),
                    description="Download\nany file",
                    deliver_below=500,
                ),
                Route("*", "/v1/echo"),
                Route("*", "/v1/paid-echo", Price(Decimal("1"), ("card",))),
                Route("GET", "/v1/paid-echo"),
            ),
        ),
    )
    return check_config(
        Config(
            proxy=ProxySettings(
                secret_key=Secret(s["hmac"]),
                realm="api.example.com",
                title="Example AI Gateway",
                description="Pay-per-call access to OpenAI, forecasts and files.",
                categories=("ai", "data"),
                state=f"redis://:{s['redis']}@127.0.0.1:6379/0",
                allow_test_payments=True,
            ),
            methods=methods,
            services=services,
        )
    )
