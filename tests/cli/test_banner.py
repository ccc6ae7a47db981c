"""The startup banner: what it shows, the warnings it raises, and the secrets it never prints."""

from __future__ import annotations

import dataclasses
from decimal import Decimal

from mpp_proxy.cli.banner import Listener, render_banner, warnings
from mpp_proxy.cli.redact import public_url
from mpp_proxy.config.model import (
    BasicAuth,
    BearerAuth,
    Config,
    EvmMethod,
    HeaderAuth,
    Price,
    ProxySettings,
    Route,
    Secret,
    Service,
    StripeMethod,
    TempoMethod,
    TestMoneyMethod,
)

# Every secret field gets a value no honest banner line could contain by accident.
SECRETS = {
    "hmac": "HMACSECRETzq81",
    "openai": "sk-OPENAIKEYzq82",
    "weather": "WEATHERKEYzq83",
    "basic_user": "BASICUSERzq84",
    "basic_pass": "BASICPASSzq85",
    "stripe": "sk_test_STRIPEzq86",
    "fee_payer": "0xFEEPAYERzq87",
    "redis_pass": "REDISPASSzq88",
    "url_user": "URLUSERzq89",
    "url_pass": "URLPASSzq90",
    "query_key": "QUERYKEYzq91",
    "rpc_key": "RPCKEYzq92",
}
USDC = "0x20C000000000000000000000b9537d11c60E8b50"


def full_config(state: str = "sqlite:///var/lib/mpp-proxy/state.db") -> Config:
    s = SECRETS
    return Config(
        proxy=ProxySettings(
            secret_key=Secret(s["hmac"]),
            realm="api.example.com",
            port=4402,
            state=state,
            title="My AI Gateway",
        ),
        methods=(
            TempoMethod(
                name="usdc",
                recipient="0x1111111111111111111111111111111111111111",
                currency=USDC,
                rpc_url=f"https://rpc.example.com/v2/{s['rpc_key']}",
                fee_payer_key=Secret(s["fee_payer"]),
            ),
            StripeMethod(name="card", secret_key=Secret(s["stripe"]), network_id="net_123"),
        ),
        services=(
            Service(
                id="openai",
                base_url="https://api.openai.com",
                auth=BearerAuth(Secret(s["openai"])),
                preset="openai",
                routes=(
                    Route("GET", "/v1/models"),
                    Route(
                        "POST",
                        "/v1/chat/completions",
                        Price(Decimal("0.05"), ("usdc", "card")),
                        description="Chat completion",
                    ),
                ),
            ),
            Service(
                id="weather",
                base_url=(
                    f"https://{s['url_user']}:{s['url_pass']}@api.weather.example/v1"
                    f"?key={s['query_key']}"
                ),
                auth=HeaderAuth("X-Api-Key", Secret(s["weather"])),
                routes=(Route("GET", "/v1/forecast/:city", Price(Decimal("0.001"), ("usdc",))),),
            ),
            Service(
                id="legacy",
                base_url="http://legacy.internal:8080",
                auth=BasicAuth(Secret(s["basic_user"]), Secret(s["basic_pass"])),
                routes=(Route("*", "/*", Price(Decimal("1E+1"), ("card",))),),
            ),
        ),
        source="/etc/mpp-proxy/proxy.toml",
    )


def test_banner_never_prints_a_secret_not_even_a_prefix() -> None:
    for state in ("sqlite:///s.db", f"redis://:{SECRETS['redis_pass']}@10.0.0.5:6379/0"):
        text = render_banner(full_config(state), Listener("0.0.0.0", 4402, workers=4))
        assert "zq8" not in text and "zq9" not in text  # the marker every secret ends with
        for value in SECRETS.values():
            assert value[:8] not in text, value  # a prefix is already a leak


def test_banner_shows_every_route_with_price_currency_and_methods() -> None:
    text = render_banner(full_config(), Listener("127.0.0.1", 4402))
    assert "mpp-proxy 0.1.0" in text
    assert "http://127.0.0.1:4402" in text
    assert "sqlite:///var/lib/mpp-proxy/state.db" in text
    assert "GET /openai/v1/models" in text
    models_line = next(line for line in text.splitlines() if "/openai/v1/models" in line)
    assert models_line.rstrip().endswith("free")
    chat = next(line for line in text.splitlines() if "/openai/v1/chat/completions" in line)
    assert "usdc: 0.05 USDC" in chat
    assert "card: 0.05 USD" in chat
    assert "Chat completion" in chat
    assert "* /legacy/*" in text
    assert "card: 10 USD" in text  # never "1E+1"


def test_banner_shows_base_urls_without_userinfo_or_query_values() -> None:
    text = render_banner(full_config(), Listener("127.0.0.1", 4402))
    assert "openai -> https://api.openai.com" in text
    assert "weather -> https://api.weather.example/v1?..." in text
    assert "key in header X-Api-Key" in text
    assert "rpc https://rpc.example.com" in text


def test_banner_lists_discovery_urls_reachable_from_this_machine() -> None:
    text = render_banner(full_config(), Listener("0.0.0.0", 8080))
    assert "listening  http://0.0.0.0:8080" in text
    assert "http://127.0.0.1:8080/llms.txt" in text
    assert "http://127.0.0.1:8080/openapi.json" in text


def test_test_payments_raise_a_loud_warning() -> None:
    config = Config(
        proxy=ProxySettings(secret_key=Secret("x"), allow_test_payments=True),
        methods=(TestMoneyMethod(name="play"),),
    )
    text = render_banner(config, Listener("127.0.0.1", 4402))
    assert "!! WARNING: TEST PAYMENTS ALLOWED" in text
    assert "play" in text


def test_memory_state_with_several_workers_warns_about_replay() -> None:
    config = Config(proxy=ProxySettings(secret_key=Secret("x"), state="memory://"))
    assert any("MEMORY STATE WITH 3 WORKERS" in w for w in warnings(config, workers=3))
    assert not any("WORKERS" in w for w in warnings(config, workers=1))


def test_public_url_strips_userinfo_and_query() -> None:
    assert public_url("redis://:pw@127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert public_url("redis://user:pw@h/0?password=pw") == "redis://h/0?..."
    assert public_url("sqlite:///var/x.db") == "sqlite:///var/x.db"
    assert public_url("memory://") == "memory://"
    assert public_url("http://[::1]:8080/x") == "http://[::1]:8080/x"


def test_banner_names_tokens_as_llms_txt_does() -> None:
    base_usdc = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"
    evm = EvmMethod("base", currency=base_usdc, recipient=USDC, chain_id=8453)
    config = dataclasses.replace(full_config(), methods=(*full_config().methods, evm))
    text = render_banner(config, Listener("127.0.0.1", 4402))
    base_line = next(line for line in text.splitlines() if line.startswith("  base "))
    assert "USDC on EVM chain 8453" in base_line and base_usdc not in base_line
