"""Sample configs and an environment full of secrets, shared by the config tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

RECIPIENT = "0x1111111111111111111111111111111111111111"
USDC = "0x20C000000000000000000000b9537d11c60E8b50"

# Every value here is a secret: none may ever show up in a message or a repr.
SECRETS = {
    "MPP_SECRET_KEY": "hmac-SECRET-4f1c9a7be2d04c55a1f0e3b7c8d9a6e5",
    "OPENAI_API_KEY": "sk-openai-SECRET-a1b2c3d4e5",
    "ANTHROPIC_API_KEY": "sk-ant-SECRET-f6e5d4c3b2",
    "STRIPE_API_KEY": "sk_live_SECRET_9z8y7x6w5v",
    "STRIPE_SECRET_KEY": "sk_test_SECRET_method_1q2w3e",
    "WEATHER_KEY": "weather-SECRET-0p9o8i7u",
    "FEE_PAYER_KEY": "0x" + "ab" * 32,
}

ENV = {
    **SECRETS,
    "RECIPIENT_ADDRESS": RECIPIENT,
    "STRIPE_NETWORK_ID": "net_123",
}

FULL_TOML = f"""
[proxy]
secret_key = "${{MPP_SECRET_KEY}}"
realm = "api.example.com"
port = 4402
state = "sqlite:///var/lib/mpp-proxy/state.db"
title = "My AI Gateway"
description = "Pay-per-call access to OpenAI and a weather API."
categories = ["ai", "weather"]

[methods.usdc]
kind = "tempo"
recipient = "${{RECIPIENT_ADDRESS}}"
currency = "{USDC}"
chain_id = 4217
rpc_url = "https://rpc.tempo.xyz"
fee_payer_key = "${{FEE_PAYER_KEY}}"

[methods.card]
kind = "stripe"
secret_key = "${{STRIPE_SECRET_KEY}}"
network_id = "${{STRIPE_NETWORK_ID}}"
currency = "usd"

[services.openai]
preset = "openai"
api_key = "${{OPENAI_API_KEY}}"
[services.openai.routes]
"GET /v1/models" = "free"
"POST /v1/chat/completions" = {{ price = "0.05", pay_with = ["usdc", "card"], \
description = "Chat completion" }}

[services.claude]
preset = "anthropic"
api_key = "${{ANTHROPIC_API_KEY}}"
title = "Claude"
[services.claude.routes]
"POST /v1/messages" = {{ price = "0.02", pay_with = ["usdc"], deliver_below = 300 }}

[services.billing]
preset = "stripe"
api_key = "${{STRIPE_API_KEY}}"
strip_headers = ["x-debug"]
[services.billing.routes]
"GET /v1/balance" = {{ price = "0.01", pay_with = ["card"] }}

[services.weather]
base_url = "https://api.weather.example/"
auth = {{ header = "X-Api-Key", value = "${{WEATHER_KEY}}" }}
timeouts = {{ connect = 2, read = 30.5 }}
max_body_bytes = 1024
forward_client_ip = true
max_connections = 8
strip_response_headers = []
[services.weather.routes]
"GET /v1/forecast/:city" = {{ price = "0.001", pay_with = ["usdc"], max_body_bytes = 0 }}
"/v1/status" = "free"
"* /v1/files/*" = {{ price = "1", pay_with = ["usdc", "card"], description = "Files" }}
"""

FULL_PY = f"""
from mpp_proxy import services
from mpp_proxy.config import charge, env, free, make_config
from mpp_proxy.config.methods import stripe, tempo

usdc = tempo(
    "usdc",
    recipient=env("RECIPIENT_ADDRESS"),
    currency="{USDC}",
    chain_id=4217,
    rpc_url="https://rpc.tempo.xyz",
    fee_payer_key=env("FEE_PAYER_KEY"),
)
card = stripe(
    "card",
    secret_key=env("STRIPE_SECRET_KEY"),
    network_id=env("STRIPE_NETWORK_ID"),
    currency="usd",
)

config = make_config(
    secret_key=env("MPP_SECRET_KEY"),
    realm="api.example.com",
    port=4402,
    state="sqlite:///var/lib/mpp-proxy/state.db",
    title="My AI Gateway",
    description="Pay-per-call access to OpenAI and a weather API.",
    categories=["ai", "weather"],
    methods=[usdc, card],
    services=[
        services.openai(
            api_key=env("OPENAI_API_KEY"),
            routes={{
                "GET /v1/models": free,
                "POST /v1/chat/completions": charge(
                    "0.05", usdc, card, description="Chat completion"
                ),
            }},
        ),
        services.anthropic(
            "claude",
            api_key=env("ANTHROPIC_API_KEY"),
            title="Claude",
            routes={{"POST /v1/messages": charge("0.02", usdc, deliver_below=300)}},
        ),
        services.stripe(
            "billing",
            api_key=env("STRIPE_API_KEY"),
            strip_headers=["x-debug"],
            routes={{"GET /v1/balance": charge("0.01", "card")}},
        ),
        services.service(
            "weather",
            base_url="https://api.weather.example/",
            auth=services.header("X-Api-Key", env("WEATHER_KEY")),
            timeouts={{"connect": 2, "read": 30.5}},
            max_body_bytes=1024,
            forward_client_ip=True,
            max_connections=8,
            strip_response_headers=[],
            routes={{
                "GET /v1/forecast/:city": charge("0.001", usdc, max_body_bytes=0),
                "/v1/status": free,
                "* /v1/files/*": charge("1", usdc, card, description="Files"),
            }},
        ),
    ],
)
"""

Writer = Callable[..., Path]
