"""examples/openai-tempo.toml written in Python: the same gateway, with prices computed in code.

    mpp-proxy check --config examples/proxy.py
    mpp-proxy serve --config examples/proxy.py

A proxy.py is ordinary Python run once at load: read the environment with `env()` (a missing
variable is a clear config error naming it), compute prices, loop over models. It must leave the
finished gateway in a module-level `config`: a `Proxy(...)` (the ASGI app, built with the same
keywords as `mpp_proxy.config.make_config`) or a plain `Config`.
"""

from decimal import Decimal

from mpp_proxy import Proxy, charge, env, free, methods, services

usdc = methods.tempo(
    "usdc",
    recipient=env("RECIPIENT_ADDRESS"),
    currency="0x20C000000000000000000000b9537d11c60E8b50",  # USDC on Tempo
    chain_id=4217,
    rpc_url="https://rpc.tempo.xyz",
)

# Prices in USDC; a margin on top of the list price is one line of arithmetic here.
MARGIN = Decimal("1.00")
PRICES = {
    "POST /v1/chat/completions": ("0.05", "Chat completion"),
    "POST /v1/responses": ("0.05", "Responses API call"),
    "POST /v1/embeddings": ("0.001", "Embeddings"),
    "POST /v1/images/generations": ("0.08", "One image"),
}

openai = services.openai(
    api_key=env("OPENAI_API_KEY"),
    routes={
        "GET /v1/models": free,
        "GET /v1/models/:model": free,
        **{
            route: charge(Decimal(price) * MARGIN, usdc, description=description)
            for route, (price, description) in PRICES.items()
        },
    },
)

# The ASGI app itself; `mpp-proxy serve` (or any ASGI server) takes its `.config`.
config = Proxy(
    secret_key=env("MPP_SECRET_KEY"),
    realm="gateway.example.com",
    port=int(env("PORT", "4402")),
    state="sqlite:///mpp-proxy-state.db",
    title="OpenAI, pay per call",
    description="OpenAI's API, paid per request in USDC on Tempo. No account, no API key.",
    methods=[usdc],
    services=[openai],
)
