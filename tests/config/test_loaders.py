"""Both front ends: TOML and proxy.py produce the same checked model, in config order."""

from __future__ import annotations

import dataclasses
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from config_samples import ENV, FULL_PY, FULL_TOML, SECRETS, Writer

from mpp_proxy.config import (
    BasicAuth,
    BearerAuth,
    Config,
    ConfigError,
    HeaderAuth,
    Secret,
    TestMoneyMethod,
    Timeouts,
    config_warnings,
    load_config,
    test_methods_not_allowed,
)


def without_source(config: Config) -> Config:
    return dataclasses.replace(config, source="<memory>")


def test_toml_and_python_files_produce_equal_models(write: Writer) -> None:
    from_toml = load_config(write(FULL_TOML, "proxy.toml"), ENV)
    from_py = load_config(write(FULL_PY, "proxy.py"), ENV)
    assert without_source(from_toml) == without_source(from_py)
    assert from_toml.source.endswith("proxy.toml")
    assert from_py.source.endswith("proxy.py")


def test_full_toml_builds_the_expected_model(write: Writer) -> None:
    config = load_config(write(FULL_TOML), ENV)
    assert config.proxy.secret_key == Secret(SECRETS["MPP_SECRET_KEY"])
    assert config.proxy.categories == ("ai", "weather")
    assert [m.name for m in config.methods] == ["usdc", "card"]
    assert [s.id for s in config.services] == ["openai", "claude", "billing", "weather"]
    weather = config.service("weather")
    assert weather.base_url == "https://api.weather.example"
    assert weather.auth == HeaderAuth("x-api-key", Secret(SECRETS["WEATHER_KEY"]))
    assert weather.timeouts == Timeouts(connect=2.0, read=30.5)
    assert weather.strip_response_headers == ()
    assert weather.forward_client_ip is True
    assert [r.key for r in weather.routes] == [
        "GET /v1/forecast/:city",
        "* /v1/status",
        "* /v1/files/*",
    ]
    forecast = weather.routes[0]
    assert forecast.price is not None
    assert forecast.price.amount == Decimal("0.001")
    assert forecast.max_body_bytes == 0
    assert weather.routes[1].is_free
    billing = config.service("billing")
    assert billing.auth == BasicAuth(Secret(SECRETS["STRIPE_API_KEY"]))
    assert billing.strip_headers == ("stripe-account", "x-debug")
    assert config.service("claude").routes[0].deliver_below == 300
    assert isinstance(config.service("openai").auth, BearerAuth)


def test_services_and_routes_keep_the_order_written(write: Writer) -> None:
    ids = ["zeta", "alpha", "mid", "beta"]
    text = '[proxy]\nsecret_key = "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"\n[methods.t]\nkind = "test"\n'
    for sid in ids:
        text += f'[services.{sid}]\nbase_url = "http://127.0.0.1:1"\n[services.{sid}.routes]\n'
        text += '"POST /z" = { price = "1" }\n"GET /a" = "free"\n"/m" = "free"\n'
    config = load_config(write(text), {})
    assert [s.id for s in config.services] == ids
    assert [r.key for r in config.services[0].routes] == ["POST /z", "GET /a", "* /m"]


def test_pay_with_defaults_to_the_only_method(write: Writer) -> None:
    config = load_config(
        write(
            """
            [proxy]
            secret_key = "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"
            [methods.play]
            kind = "test"
            [services.api]
            base_url = "http://127.0.0.1:9"
            routes = { "GET /x" = { price = "0.5" } }
            """
        ),
        {},
    )
    price = config.services[0].routes[0].price
    assert price is not None and price.pay_with == ("play",)


def test_python_file_may_expose_an_object_with_a_config_attribute(write: Writer) -> None:
    path = write(
        """
        from mpp_proxy.config import make_config

        class Proxy:
            def __init__(self, config):
                self.config = config

        config = Proxy(make_config(realm="x.example"))
        """,
        "proxy.py",
    )
    assert load_config(path, {}).proxy.realm == "x.example"


def test_python_file_env_reads_the_environ_given_to_load_config(write: Writer) -> None:
    path = write(
        """
        from mpp_proxy import env
        from mpp_proxy.config import make_config
        config = make_config(realm=env("REALM"), title=env("TITLE", "default title"))
        """,
        "proxy.py",
    )
    config = load_config(path, {"REALM": "from.environ"})
    assert (config.proxy.realm, config.proxy.title) == ("from.environ", "default title")


def test_python_file_missing_env_var_names_it_and_the_line(write: Writer) -> None:
    path = write(
        """
        from mpp_proxy.config import env, make_config

        config = make_config(secret_key=env("NOT_SET_ANYWHERE"))
        """,
        "proxy.py",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    assert "NOT_SET_ANYWHERE" in str(info.value)
    assert info.value.file == str(path)
    assert info.value.line == 4


def test_python_file_without_config_says_what_to_add(write: Writer) -> None:
    with pytest.raises(ConfigError, match="defines no `config`"):
        load_config(write("x = 1\n", "proxy.py"), {})


def test_python_file_config_of_the_wrong_type_is_rejected(write: Writer) -> None:
    with pytest.raises(ConfigError, match="must be a Config or a Proxy, not dict"):
        load_config(write("config = {}\n", "proxy.py"), {})


def test_python_syntax_error_names_the_line(write: Writer) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write("x = 1\nconfig = (\n", "proxy.py"), {})
    assert "syntax error" in str(info.value)
    assert info.value.line is not None


def test_python_file_exception_is_reported_with_its_line(write: Writer) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write("x = 1\ny = undefined_name\n", "proxy.py"), {})
    assert "NameError" in str(info.value)
    assert info.value.line == 2


def test_python_files_loaded_twice_do_not_share_state(write: Writer) -> None:
    path = write(
        """
        from mpp_proxy.config import env, make_config
        config = make_config(realm=env("REALM"))
        """,
        "proxy.py",
    )
    assert load_config(path, {"REALM": "one"}).proxy.realm == "one"
    assert load_config(path, {"REALM": "two"}).proxy.realm == "two"


def test_python_config_built_by_hand_is_still_checked(write: Writer) -> None:
    path = write(
        """
        from decimal import Decimal
        from mpp_proxy.config import Config, Price, ProxySettings, Route, Service
        config = Config(
            proxy=ProxySettings(),
            services=(Service("api", "http://x", (Route("GET", "/", Price(Decimal(1), ())),)),),
        )
        """,
        "proxy.py",
    )
    with pytest.raises(ConfigError, match="secret_key"):
        load_config(path, {})


def test_load_config_reads_os_environ_by_default(
    write: Writer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MPP_TEST_REALM", "env.example")
    path = write('[proxy]\nrealm = "${MPP_TEST_REALM}"\n')
    assert load_config(path).proxy.realm == "env.example"


def test_unknown_file_type_is_rejected(write: Writer) -> None:
    with pytest.raises(ConfigError, match=r"\.toml or \.py"):
        load_config(write("", "proxy.yaml"), {})


def test_numbers_and_booleans_may_come_from_env_strings(write: Writer) -> None:
    config = load_config(
        write(
            """
            [proxy]
            port = "${PORT}"
            allow_test_payments = "${ALLOW:-false}"
            credit_ttl = "${TTL:-60}"
            """
        ),
        {"PORT": "8080"},
    )
    assert (config.proxy.port, config.proxy.allow_test_payments) == (8080, False)
    assert config.proxy.credit_ttl == 60.0


def test_empty_toml_is_a_proxy_with_defaults(write: Writer) -> None:
    config = load_config(write(""), {})
    assert config.services == () and config.methods == ()
    assert config.proxy.secret_key is None


def test_test_money_without_allow_loads_but_is_flagged(write: Writer) -> None:
    text = """
        [proxy]
        secret_key = "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"
        [methods.play]
        kind = "test"
        [services.api]
        base_url = "http://127.0.0.1:9"
        routes = { "GET /x" = { price = "0.5" } }
        """
    config = load_config(write(text), {})
    assert isinstance(config.methods[0], TestMoneyMethod)
    assert test_methods_not_allowed(config) == ("play",)
    assert any("allow_test_payments" in w for w in config_warnings(config))
    allowed = load_config(
        write("[proxy]\nallow_test_payments = true\n" + text.replace("[proxy]", "")), {}
    )
    assert test_methods_not_allowed(allowed) == ()


def test_example_config_from_the_design_loads(write: Writer, tmp_path: Path) -> None:
    config = load_config(write(FULL_TOML), ENV)
    assert config_warnings(config) == ()


def test_python_file_can_import_a_module_next_to_it(write: Writer) -> None:
    write('REALM = "sibling.example"\n', "gateway_prices_sibling.py")
    path = write(
        """
        from gateway_prices_sibling import REALM
        from mpp_proxy.config import make_config
        config = make_config(realm=REALM)
        """,
        "proxy.py",
    )
    assert load_config(path, {}).proxy.realm == "sibling.example"
    assert str(path.parent) not in sys.path


def test_reloading_reads_a_changed_sibling_module(write: Writer) -> None:
    write('REALM = "one.example"\n', "gateway_sibling_reload.py")
    text = """
        from gateway_sibling_reload import REALM
        from mpp_proxy.config import make_config
        config = make_config(realm=REALM)
        """
    path = write(text, "proxy.py")
    assert load_config(path, {}).proxy.realm == "one.example"
    write('REALM = "two.example"\n', "gateway_sibling_reload.py")
    assert load_config(path, {}).proxy.realm == "two.example"


def test_short_challenge_ttl_with_tempo_is_flagged(write: Writer) -> None:
    text = """
        [proxy]
        secret_key = "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"
        challenge_ttl = {ttl}
        [methods.usdc]
        kind = "tempo"
        recipient = "0x1111111111111111111111111111111111111111"
        currency = "0x20C000000000000000000000b9537d11c60E8b50"
        [services.api]
        base_url = "http://127.0.0.1:9"
        routes = {{ "GET /x" = {{ price = "0.5" }} }}
        """
    short = load_config(write(text.format(ttl=3)), {})
    assert any("challenge_ttl" in w and "Tempo" in w for w in config_warnings(short))
    enough = load_config(write(text.format(ttl=60)), {})
    assert not [w for w in config_warnings(enough) if "challenge_ttl" in w]
