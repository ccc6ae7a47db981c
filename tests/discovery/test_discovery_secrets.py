"""Nothing private reaches discovery: keys, the HMAC secret, upstream and backend URLs."""

from __future__ import annotations

import json

import pytest
from discovery_samples import SECRETS, known_config

from mpp_proxy.config.model import (
    BasicAuth,
    BearerAuth,
    EvmMethod,
    HeaderAuth,
    StripeMethod,
    TempoMethod,
)
from mpp_proxy.discovery import llms_txt, openapi_document


def published() -> dict[str, str]:
    config = known_config()
    return {
        "openapi.json": json.dumps(openapi_document(config)),
        "openapi.json with base_url": json.dumps(
            openapi_document(config, base_url="https://api.example.com")
        ),
        "llms.txt": llms_txt(config),
    }


@pytest.mark.parametrize("field", sorted(SECRETS))
def test_secret_value_appears_in_neither_document(field: str) -> None:
    value = SECRETS[field].lower()
    for name, text in published().items():
        assert value not in text.lower(), f"{field} leaked into {name}"


def test_every_secret_field_of_the_known_config_holds_a_marker() -> None:
    # Guards the test above: the config really carries the markers it looks for.
    config = known_config()
    held = [
        config.proxy.secret_key.value if config.proxy.secret_key else "",
        config.proxy.state,
        *(repr(m) for m in config.methods),
        *(s.base_url for s in config.services),
    ]
    text = " ".join(held)
    for field in ("hmac", "redis", "upstream_openai", "upstream_weather", "upstream_files"):
        assert SECRETS[field] in text
    usdc, card, base, _ = config.methods
    assert isinstance(usdc, TempoMethod) and isinstance(card, StripeMethod)
    assert isinstance(base, EvmMethod) and usdc.fee_payer_key is not None
    assert SECRETS["fee_payer"] == usdc.fee_payer_key.value
    assert SECRETS["rpc"] in (usdc.rpc_url or "")
    assert SECRETS["stripe_key"] == card.secret_key.value
    assert SECRETS["stripe_base"] in card.api_base
    assert SECRETS["facilitator"] in (base.facilitator_url or "")
    openai, weather, files = config.services
    assert isinstance(openai.auth, BearerAuth) and openai.auth.token.value == SECRETS["openai_key"]
    assert isinstance(weather.auth, HeaderAuth)
    assert weather.auth.value.value == SECRETS["weather_key"]
    assert isinstance(files.auth, BasicAuth)
    assert files.auth.username.value == SECRETS["files_user"]
    assert files.auth.password.value == SECRETS["files_password"]
    assert SECRETS["ca_bundle"] in (files.ca_bundle or "")


def test_upstream_base_urls_are_not_published_at_all() -> None:
    for service in known_config().services:
        host = service.base_url.split("://", 1)[1].split("/", 1)[0]
        for text in published().values():
            assert host not in text
