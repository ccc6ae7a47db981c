"""Presets equal the same service built by hand; auth builders inject exactly the right header."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable

import certifi
import pytest
from config_samples import ENV, FULL_TOML, SECRETS, Writer

from mpp_proxy.config import (
    BasicAuth,
    ConfigError,
    Secret,
    Service,
    auth_headers,
    basic,
    bearer,
    charge,
    free,
    header,
    load_config,
)
from mpp_proxy.config import presets as services

ROUTES = {"GET /v1/models": free, "POST /v1/x": charge("0.05", "usdc")}


def untagged(service: Service) -> Service:
    """The service without the informational `preset` tag."""
    return dataclasses.replace(service, preset=None)


def test_openai_preset_equals_the_service_built_by_hand() -> None:
    preset = services.openai(api_key="sk-1", routes=ROUTES)
    by_hand = services.service(
        "openai",
        base_url="https://api.openai.com",
        auth=services.bearer("sk-1"),
        strip_headers=["OpenAI-Organization", "OpenAI-Project"],
        routes=ROUTES,
    )
    assert preset.preset == "openai"
    assert untagged(preset) == by_hand
    assert auth_headers(preset.auth) == ((b"authorization", b"Bearer sk-1"),)


def test_anthropic_preset_equals_the_service_built_by_hand() -> None:
    preset = services.anthropic(api_key="sk-ant", routes=ROUTES)
    by_hand = services.service(
        "anthropic",
        base_url="https://api.anthropic.com",
        auth=services.header("X-Api-Key", "sk-ant"),
        routes=ROUTES,
    )
    assert untagged(preset) == by_hand
    assert auth_headers(preset.auth) == ((b"x-api-key", b"sk-ant"),)
    # The client's anthropic-version header is forwarded: the preset never strips it.
    assert "anthropic-version" not in preset.strip_headers


def test_stripe_preset_equals_the_service_built_by_hand() -> None:
    preset = services.stripe(api_key="sk_live_1", routes=ROUTES)
    by_hand = services.service(
        "stripe",
        base_url="https://api.stripe.com",
        auth=services.basic("sk_live_1"),
        strip_headers=["stripe-account"],
        routes=ROUTES,
    )
    assert untagged(preset) == by_hand
    expected = b"Basic " + base64.b64encode(b"sk_live_1:")
    assert auth_headers(preset.auth) == ((b"authorization", expected),)


@pytest.mark.parametrize("build", [services.openai, services.anthropic, services.stripe])
def test_preset_takes_only_api_key_and_routes(build: Callable[..., Service]) -> None:
    service = build(api_key="k", routes={})
    assert service.id == build.__name__
    assert service.base_url.startswith("https://api.")


def test_preset_base_url_and_id_can_be_overridden() -> None:
    service = services.openai(
        "oai", api_key="k", routes={}, base_url="http://127.0.0.1:8080/openai/"
    )
    assert (service.id, service.base_url) == ("oai", "http://127.0.0.1:8080/openai")


def test_preset_keeps_its_strip_list_and_adds_extra_names() -> None:
    service = services.openai(api_key="k", routes={}, strip_headers=["X-Debug", "openai-project"])
    assert service.strip_headers == ("openai-organization", "openai-project", "x-debug")


def test_preset_takes_every_service_option() -> None:
    service = services.anthropic(
        api_key="k",
        routes={},
        title="Claude",
        description="d",
        timeouts={"read": 600},
        max_body_bytes=1,
        forward_client_ip=True,
        ca_bundle=certifi.where(),
        max_connections=3,
        strip_response_headers=[],
    )
    assert service.timeouts.read == 600.0 and service.ca_bundle == certifi.where()
    assert service.strip_response_headers == ()


def test_preset_strip_headers_must_be_a_list() -> None:
    # A string was spread into one-letter header names: "x-org" stripped x, -, o, r, g.
    with pytest.raises(ConfigError) as info:
        services.openai(api_key="k", routes={}, strip_headers="x-org")
    assert (info.value.service, info.value.key) == ("openai", "strip_headers")
    assert "list of strings" in info.value.problem


def test_preset_rejects_a_separate_auth() -> None:
    with pytest.raises(ConfigError, match="builds auth from api_key"):
        services.openai(api_key="k", routes={}, auth=bearer("x"))


def test_preset_empty_api_key_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        services.openai(api_key="", routes={})
    assert (info.value.service, info.value.key) == ("openai", "api_key")


@pytest.mark.parametrize("preset", ["openai", "anthropic", "stripe"])
def test_toml_preset_goes_through_the_same_function(write: Writer, preset: str) -> None:
    text = f"""
        [services.{preset}]
        preset = "{preset}"
        api_key = "k"
        routes = {{ "GET /v1/models" = "free" }}
        """
    config = load_config(write(text), {})
    build = getattr(services, preset)
    assert config.services == (build(api_key="k", routes={"GET /v1/models": free}),)


def test_auth_headers_of_no_auth_is_empty() -> None:
    assert auth_headers(None) == ()


def test_header_auth_name_is_lower_case_on_the_wire() -> None:
    assert auth_headers(header("X-Custom-Key", "v")) == ((b"x-custom-key", b"v"),)


def test_basic_with_only_a_key_uses_it_as_the_user_with_empty_password() -> None:
    auth = basic("key")
    assert auth == BasicAuth(Secret("key"), Secret(""))
    assert auth_headers(auth) == ((b"authorization", b"Basic " + base64.b64encode(b"key:")),)


def test_basic_user_colon_password_is_split_like_two_arguments() -> None:
    assert basic("user:pa:ss") == basic("user", "pa:ss")
    assert auth_headers(basic("user", "pw")) == (
        (b"authorization", b"Basic " + base64.b64encode(b"user:pw")),
    )


def test_basic_user_with_colon_and_a_password_is_rejected() -> None:
    with pytest.raises(ConfigError, match="cannot contain ':'"):
        basic("a:b", "c")


def test_toml_basic_forms_match_the_python_builder(write: Writer) -> None:
    def auth_of(auth: str) -> object:
        text = f'[services.a]\nbase_url = "http://x"\nauth = {auth}\nroutes = {{}}\n'
        return load_config(write(text), {}).services[0].auth

    assert auth_of('{ basic = "u:p" }') == basic("u", "p")
    assert auth_of('{ basic = "u", password = "p" }') == basic("u", "p")
    assert auth_of('{ basic = "k" }') == basic("k")


def test_basic_utf8_credentials_are_encoded_as_utf8() -> None:
    assert auth_headers(basic("j\u00fcrgen", "p\u00e4ss")) == (
        (b"authorization", b"Basic " + base64.b64encode("j\u00fcrgen:p\u00e4ss".encode())),
    )


@pytest.mark.parametrize("value", ["a\nb", "a\rb", " lead", "trail ", "nul\x00", "\u20ac"])
def test_header_values_that_could_inject_or_not_encode_are_rejected(value: str) -> None:
    with pytest.raises(ConfigError, match="not shown"):
        bearer(value)


def test_full_example_auth_headers(write: Writer) -> None:
    config = load_config(write(FULL_TOML), ENV)
    weather = config.service("weather")
    assert auth_headers(weather.auth) == ((b"x-api-key", SECRETS["WEATHER_KEY"].encode()),)


@pytest.mark.parametrize("name", ["Host", "content-length", "Transfer-Encoding", "payment-receipt"])
def test_header_auth_cannot_use_a_framing_or_payment_header(name: str) -> None:
    with pytest.raises(ConfigError, match="cannot carry an upstream credential"):
        header(name, "v")
