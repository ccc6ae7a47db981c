"""llms.txt: a Markdown directory agents can act on: routes, prices in human units, how to pay."""

from __future__ import annotations

from decimal import Decimal

from discovery_samples import RECIPIENT, TEMPO_USDC, known_config

from mpp_proxy.config.model import (
    Config,
    Price,
    ProxySettings,
    Route,
    Secret,
    Service,
    StripeMethod,
    TempoMethod,
)
from mpp_proxy.discovery import llms_txt


def test_starts_with_title_and_summary() -> None:
    lines = llms_txt(known_config()).splitlines()
    assert lines[0] == "# Example AI Gateway"
    assert lines[2] == "> Pay-per-call access to OpenAI, forecasts and files."


def test_prices_are_in_human_units_with_currency_and_method() -> None:
    text = llms_txt(known_config())
    assert (
        "- `POST /openai/v1/chat/completions`: 0.05 USDC (tempo) or 0.05 USD (stripe). "
        "Chat completion"
    ) in text.splitlines()
    assert "- `GET /weather/v1/forecast/:city/days/:n`: 2 USDC (tempo) or 2.00 USD (stripe)" in text


def test_free_routes_are_marked_free() -> None:
    text = llms_txt(known_config())
    assert "- `GET /openai/v1/models`: free" in text.splitlines()
    assert "- `ANY /files/v1/echo`: free" in text.splitlines()


def test_explains_the_three_steps_of_paying() -> None:
    text = llms_txt(known_config())
    steps = text.split("## How to pay\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert len(steps) == 3
    assert "402" in steps[0] and "WWW-Authenticate: Payment" in steps[0]
    assert "Authorization: Payment" in steps[1]
    assert "Payment-Receipt" in steps[2]


def test_links_to_the_openapi_document() -> None:
    assert "](/openapi.json)" in llms_txt(known_config())
    assert "](https://x.example/p/openapi.json)" in llms_txt(
        known_config(), base_url="https://x.example/p"
    )


def test_lists_accepted_payment_methods_with_public_details_only() -> None:
    text = llms_txt(known_config())
    methods = text.split("## Payment methods\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert [m.split("`")[1] for m in methods] == ["usdc", "card", "base", "play"]
    assert f"paid to `{RECIPIENT}`" in methods[0]
    assert TEMPO_USDC in methods[0]


def test_unused_methods_are_not_listed() -> None:
    usdc = TempoMethod(name="usdc", recipient=RECIPIENT, currency=TEMPO_USDC)
    card = StripeMethod(name="card", secret_key=Secret("sk_x"), network_id="net_1")
    config = Config(
        proxy=ProxySettings(secret_key=Secret("k" * 32)),
        methods=(usdc, card),
        services=(
            Service(
                id="svc",
                base_url="https://u.example",
                routes=(Route("GET", "/a", Price(Decimal("1"), ("usdc",))),),
            ),
        ),
    )
    text = llms_txt(config)
    assert "`usdc`" in text
    assert "`card`" not in text


def test_multiline_descriptions_stay_on_their_line() -> None:
    text = llms_txt(known_config())
    assert "- `GET /files/v1/files/*`: 0.01 TEST (test). Download any file" in text.splitlines()


def test_empty_config_still_says_how_to_pay() -> None:
    text = llms_txt(Config(proxy=ProxySettings()))
    assert text.startswith("# mpp-proxy\n")
    assert "No services are configured." in text
    assert "## How to pay" in text
