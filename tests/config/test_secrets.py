"""Secret values never appear in a repr, a str or any ConfigError message."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from config_samples import ENV, FULL_PY, FULL_TOML, RECIPIENT, SECRETS, USDC, Writer

from mpp_proxy.config import (
    ConfigError,
    Secret,
    basic,
    bearer,
    charge,
    config_warnings,
    header,
    load_config,
    make_config,
)
from mpp_proxy.config.methods import stripe, tempo
from mpp_proxy.config.presets import anthropic, openai, service

SECRET_VALUES = tuple(SECRETS.values())


def assert_no_secret(text: str) -> None:
    for value in SECRET_VALUES:
        assert value not in text
        # Also not in the forms a careless message would use.
        assert value[6:-2] not in text


def assert_error_hides_secrets(err: ConfigError) -> None:
    for text in (str(err), repr(err), err.problem, err.message, *map(str, err.args)):
        assert_no_secret(text)


def test_repr_and_str_of_a_config_full_of_secrets_show_none(write: Writer) -> None:
    for name in ("proxy.toml", "proxy.py"):
        config = load_config(write(FULL_TOML if name.endswith("toml") else FULL_PY, name), ENV)
        assert_no_secret(repr(config))
        assert_no_secret(str(config))
        for part in (config.proxy, *config.methods, *config.services):
            assert_no_secret(repr(part))
        assert_no_secret(" ".join(config_warnings(config)))


def test_secret_repr_str_and_format_are_masked() -> None:
    value = Secret(SECRETS["OPENAI_API_KEY"])
    assert_no_secret(f"{value} {value!r} {value!s} {[value]} {bearer(value)}")


# Each mutation of the full TOML makes one error while every secret is present.
TOML_BREAKAGES = [
    ('realm = "api.example.com"', 'realm = "bad realm"'),
    ("port = 4402", "port = 1_000_000"),
    ('"0.05"', '"0.051"'),
    ('"0.05"', '"${OPENAI_API_KEY}"'),
    ('base_url = "https://api.weather.example/"', 'base_url = "${WEATHER_KEY}"'),
    ('base_url = "https://api.weather.example/"', 'base_url = "https://u:${WEATHER_KEY}@h"'),
    ('"GET /v1/forecast/:city"', '"FETCH /${WEATHER_KEY}"'),
    ('"GET /v1/forecast/:city"', '"GET ${WEATHER_KEY}"'),
    ('pay_with = ["usdc"], max', 'pay_with = ["${OPENAI_API_KEY}"], max'),
    ("[services.weather]", '[services.weather]\nunknown = "${OPENAI_API_KEY}"'),
    (
        "[services.weather]",
        '[services."${OPENAI_API_KEY}"]\nbase_url="http://x"\n[services.weather]',
    ),
    ("[services.weather]", '[services.healthz]\napi_key = "${OPENAI_API_KEY}"\n[services.weather]'),
    ('kind = "tempo"', 'kind = "${STRIPE_SECRET_KEY}"'),
    ('recipient = "${RECIPIENT_ADDRESS}"', 'recipient = "${FEE_PAYER_KEY}"'),
    ('fee_payer_key = "${FEE_PAYER_KEY}"', 'fee_payer_key = "${OPENAI_API_KEY}"'),
    ('secret_key = "${MPP_SECRET_KEY}"', 'secret_key = "${MPP_SECRET_KEY}"\ntitle = 1'),
    ('value = "${WEATHER_KEY}"', 'value = "${WEATHER_KEY}\\n"'),
    ('value = "${WEATHER_KEY}"', 'value = "${WEATHER_KEY}", bearer = "${OPENAI_API_KEY}"'),
    ('network_id = "${STRIPE_NETWORK_ID}"', 'network_id = "${NOT_SET}"'),
    ('title = "My AI Gateway"', 'title = "My AI Gateway"\ntitle = "${MPP_SECRET_KEY}"'),
    ('"Chat completion" }}', '"Chat completion" }\n"${OPENAI_API_KEY}" = 1'),
]


@pytest.mark.parametrize(("old", "new"), TOML_BREAKAGES)
def test_toml_errors_never_show_a_secret(write: Writer, old: str, new: str) -> None:
    text = FULL_TOML.replace("}}", "}") if "}}" in new else FULL_TOML
    assert old.replace("}}", "}") in text
    broken = text.replace(old.replace("}}", "}"), new, 1)
    with pytest.raises(ConfigError) as info:
        load_config(write(broken), ENV)
    assert_error_hides_secrets(info.value)


def _python_breakages() -> list[Callable[[], object]]:
    key = SECRETS["OPENAI_API_KEY"]
    usdc = tempo("usdc", recipient=RECIPIENT, currency=USDC)
    return [
        lambda: bearer(key + "\n"),
        lambda: bearer(" " + key),
        lambda: header("X-Key", key + "\r\nx-evil: 1"),
        lambda: basic(key + ":x", "y"),
        lambda: openai(api_key=key, routes={"FETCH /x": charge("1")}),
        lambda: openai(api_key=key, routes={}, base_url=key),
        lambda: anthropic(api_key=key, routes={}, titel="x"),
        lambda: stripe("card", secret_key=key, network_id="", currency="usd"),
        lambda: stripe("card", secret_key=key, network_id="n", api_base=f"https://{key}@x"),
        lambda: tempo("t", recipient=RECIPIENT, currency=USDC, fee_payer_key=key),
        lambda: make_config(
            secret_key=key,
            methods=[usdc],
            services=[service("a", base_url="http://a", routes={"GET /": charge("0.0000001")})],
        ),
        lambda: make_config(secret_key=key, realm=key + " x"),
    ]


@pytest.mark.parametrize("index", range(len(_python_breakages())))
def test_python_api_errors_never_show_a_secret(index: int) -> None:
    with pytest.raises(ConfigError) as info:
        _python_breakages()[index]()
    assert_error_hides_secrets(info.value)


def test_python_file_exception_quoting_a_secret_is_redacted(write: Writer) -> None:
    path = write(
        """
        from mpp_proxy.config import env
        port = int(env("OPENAI_API_KEY"))
        """,
        "proxy.py",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, ENV)
    assert "ValueError" in str(info.value)
    assert_error_hides_secrets(info.value)


def test_missing_variable_error_names_the_variable_not_other_values(tmp_path: Path) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(FULL_TOML.replace("${STRIPE_NETWORK_ID}", "${NETWORK}"))
    with pytest.raises(ConfigError) as info:
        load_config(path, ENV)
    assert "NETWORK" in info.value.problem
    assert_error_hides_secrets(info.value)


def test_plain_string_secret_key_is_hidden_from_make_config_errors() -> None:
    key = SECRETS["MPP_SECRET_KEY"]
    with pytest.raises(ConfigError) as info:
        api = service("a", base_url="http://a", routes={"GET /": charge("1", key)})
        make_config(secret_key=key, services=[api])
    assert "pay_with" in info.value.problem
    assert_error_hides_secrets(info.value)
