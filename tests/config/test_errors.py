"""Every way a config can be wrong gives a ConfigError naming the file, service, route and key."""

from __future__ import annotations

from pathlib import Path

import certifi
import pytest
from config_samples import ENV, FULL_TOML, RECIPIENT, USDC, Writer

from mpp_proxy.config import ConfigError, charge, free, load_config, make_config
from mpp_proxy.config.methods import tempo, test_money
from mpp_proxy.config.presets import openai, service

TEMPO = f'kind = "tempo"\nrecipient = "{RECIPIENT}"\ncurrency = "{USDC}"'
KEY = "k" * 32  # an HMAC key of the shortest length accepted
HEAD = """
[proxy]
secret_key = "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk"
[methods.usdc]
kind = "test"
"""


def error(write: Writer, text: str, env: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(write(text), env or {})
    return info.value


def service_toml(body: str, routes: str = '"GET /x" = "free"') -> str:
    return f"{HEAD}[services.api]\n{body}\n[services.api.routes]\n{routes}\n"


def test_missing_file_names_the_file(tmp_path: object) -> None:
    for name in ("absent.toml", "absent.py"):
        with pytest.raises(ConfigError) as info:
            load_config(f"{tmp_path}/{name}", {})
        assert "not found" in str(info.value)
        assert info.value.file is not None and info.value.file.endswith(name)


def test_toml_syntax_error_names_its_line(write: Writer) -> None:
    err = error(write, '[proxy]\nrealm = "x"\nport = \n')
    assert err.line == 3
    assert str(err).startswith(f"{err.file}:3: TOML syntax error")


def test_duplicate_toml_key_says_it_is_defined_twice(write: Writer) -> None:
    err = error(write, '[proxy]\nrealm = "a"\nrealm = "b"\n')
    assert err.line == 3 and "defined twice" in err.problem


def test_duplicate_toml_service_table_says_it_is_defined_twice(write: Writer) -> None:
    text = service_toml('base_url = "http://a"') + '[services.api]\nbase_url = "http://b"\n'
    err = error(write, text)
    assert "defined twice" in err.problem
    assert err.line == text.count("\n", 0, text.rindex("[services.api]")) + 1


def test_missing_env_var_names_the_variable_and_where_it_is_used(write: Writer) -> None:
    err = error(write, service_toml('base_url = "${UPSTREAM_URL}"'))
    assert "UPSTREAM_URL" in err.problem
    assert (err.service, err.key) == ("api", "base_url")
    assert err.line == 7


def test_missing_env_var_in_a_route_names_the_route(write: Writer) -> None:
    err = error(
        write,
        service_toml('base_url = "http://a"', '"GET /x" = { price = "1", description = "${D}" }'),
    )
    assert (err.service, err.route, err.key) == ("api", "GET /x", "description")


def test_unknown_key_suggests_closest_name(write: Writer) -> None:
    err = error(write, service_toml('base_url = "http://a"\nmax_body_byte = 5'))
    assert err.key == "max_body_byte"
    assert "did you mean 'max_body_bytes'" in err.problem
    assert err.service == "api"


@pytest.mark.parametrize(
    ("text", "key", "suggestion"),
    [
        ('[proxy]\nsecret_kye = "k"\n', "proxy.secret_kye", "secret_key"),
        ('[proxi]\nrealm = "x"\n', "proxi", "proxy"),
        ('[methods.m]\nkind = "tempo"\nrecipent = "x"\n', "methods.m.recipent", "recipient"),
    ],
)
def test_unknown_key_in_any_table_suggests_closest_name(
    write: Writer, text: str, key: str, suggestion: str
) -> None:
    err = error(write, text)
    assert err.key == key
    assert f"did you mean {suggestion!r}" in err.problem


def test_unknown_route_option_suggests_closest_name(write: Writer) -> None:
    err = error(write, service_toml('base_url = "http://a"', '"GET /x" = { prise = "1" }'))
    assert (err.route, err.key) == ("GET /x", "prise")
    assert "did you mean 'price'" in err.problem


def test_unknown_preset_and_kind_suggest_closest_name(write: Writer) -> None:
    err = error(write, '[services.a]\npreset = "opena1"\n')
    assert "did you mean 'openai'" in err.problem
    err = error(write, '[methods.m]\nkind = "tempoo"\n')
    assert "did you mean 'tempo'" in err.problem


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("api.example.com", "scheme"),
        ("ftp://api.example.com", "scheme"),
        ("https://", "no host"),
        ("https://api.example.com/?q=1", "query"),
        ("https://api.example.com/#frag", "fragment"),
        ("https://api.example.com:99999", "Port"),
        ("https://api example.com", "whitespace"),
    ],
)
def test_invalid_base_url_is_rejected_with_the_reason(write: Writer, url: str, reason: str) -> None:
    err = error(write, service_toml(f'base_url = "{url}"'))
    assert (err.service, err.key) == ("api", "base_url")
    assert reason.lower() in err.problem.lower()


def test_url_with_credentials_is_rejected_without_showing_them(write: Writer) -> None:
    err = error(write, service_toml('base_url = "https://user:hunter2@api.example.com/v1"'))
    assert "hunter2" not in str(err)
    assert "use `auth`" in err.problem


EVM = f'kind = "evm"\nrecipient = "{RECIPIENT}"\ncurrency = "{USDC}"\nchain_id = 8453'


@pytest.mark.parametrize(("table", "key"), [(TEMPO, "rpc_url"), (EVM, "facilitator_url")])
def test_url_path_and_query_never_reach_a_message(write: Writer, table: str, key: str) -> None:
    # RPC and facilitator URLs often carry an API key in their path (Infura, Alchemy).
    url = "https://rpc.example.com/v2/PATHKEY123456?apikey=QUERYKEY123456"
    err = error(write, f'[methods.m]\n{table}\n{key} = "{url}"\n')
    assert err.key == f"methods.m.{key}" and "query" in err.problem
    assert "PATHKEY" not in str(err) and "QUERYKEY" not in str(err)
    assert "https://rpc.example.com/..." in err.problem
    err = error(write, f'[methods.m]\n{table}\n{key} = "rpc.example.com/v2/PATHKEY123456"\n')
    assert "scheme" in err.problem and "PATHKEY" not in str(err)


def test_bad_method_name_names_its_table_and_line(write: Writer) -> None:
    err = error(write, '[proxy]\nrealm = "x"\n[methods."usd c"]\nkind = "test"\n')
    assert err.key == "methods.usd c" and err.line == 3
    assert "URL-safe path segment" in err.problem


def test_invalid_method_url_names_the_method(write: Writer) -> None:
    err = error(
        write,
        f'[methods.m]\nkind = "tempo"\nrecipient = "{RECIPIENT}"\ncurrency = "{USDC}"\n'
        'rpc_url = "rpc.tempo.xyz"\n',
    )
    assert err.key == "methods.m.rpc_url"
    assert err.line == 5


@pytest.mark.parametrize(
    ("price", "problem"),
    [
        ('"abc"', "not a decimal"),
        ('"-0.05"', "negative"),
        ('"NaN"', "finite"),
        ('"Infinity"', "finite"),
        ('"1e-2"', "plain decimal"),
        ('"0.0000001"', "more decimal places"),
        ('"0"', "free"),
        ("0.05", "floats are inexact"),
    ],
)
def test_invalid_price_is_rejected(write: Writer, price: str, problem: str) -> None:
    err = error(write, service_toml('base_url = "http://a"', f'"POST /x" = {{ price = {price} }}'))
    assert (err.service, err.route) == ("api", "POST /x")
    assert err.key == "price"
    assert problem in err.problem


def test_price_with_too_many_places_names_the_method_and_its_decimals(write: Writer) -> None:
    err = error(write, service_toml('base_url = "http://a"', '"POST /x" = { price = "0.1234567" }'))
    assert "'usdc'" in err.problem and "6" in err.problem


def test_route_offering_an_undefined_method_is_rejected(write: Writer) -> None:
    err = error(
        write,
        service_toml('base_url = "http://a"', '"POST /x" = { price = "1", pay_with = ["usd"] }'),
    )
    assert (err.service, err.route, err.key) == ("api", "POST /x", "pay_with")
    assert "'usd'" in err.problem and "did you mean 'usdc'" in err.problem


def test_pay_with_is_required_when_several_methods_exist(write: Writer) -> None:
    text = service_toml('base_url = "http://a"', '"POST /x" = { price = "1" }')
    err = error(
        write, text.replace("[services.api]", '[methods.other]\nkind = "test"\n[services.api]')
    )
    assert err.key == "pay_with" and "usdc, other" in err.problem


def test_paid_route_with_no_methods_defined_is_rejected() -> None:
    api = service("api", base_url="http://a", routes={"GET /x": charge("1")})
    with pytest.raises(ConfigError, match="none defined"):
        make_config(secret_key=KEY, services=[api])


def test_duplicate_service_ids_are_rejected() -> None:
    one = service("api", base_url="http://a", routes={"GET /": free})
    two = service("api", base_url="http://b", routes={"GET /": free})
    with pytest.raises(ConfigError) as info:
        make_config(services=[one, two])
    assert info.value.service == "api" and "twice" in info.value.problem


def test_duplicate_method_names_are_rejected() -> None:
    with pytest.raises(ConfigError, match="'t' is defined twice"):
        make_config(methods=[test_money("t"), test_money("t")])


@pytest.mark.parametrize(
    "sid", ["healthz", "readyz", "llms.txt", "openapi.json", "metrics", "admin", "Admin"]
)
def test_service_id_colliding_with_a_reserved_path_is_rejected(write: Writer, sid: str) -> None:
    err = error(write, f'[services."{sid}"]\nbase_url = "http://a"\nroutes = {{}}\n')
    assert err.service == sid and "reserved" in err.problem
    assert err.line == 1


@pytest.mark.parametrize("sid", ["a/b", ".", "..", "a b", "", "caf\u00e9", "a%2Fb"])
def test_service_id_must_be_one_url_safe_segment(sid: str) -> None:
    with pytest.raises(ConfigError, match="URL-safe path segment"):
        service(sid, base_url="http://a", routes={})


def test_paid_route_without_secret_key_is_rejected(write: Writer) -> None:
    text = service_toml('base_url = "http://a"', '"POST /x" = { price = "1" }')
    err = error(write, text.replace(f'secret_key = "{KEY}"', ""))
    assert (err.service, err.route, err.key) == ("api", "POST /x", "proxy.secret_key")
    assert "secret_key" in err.problem


def test_free_only_config_needs_no_secret_key(write: Writer) -> None:
    text = service_toml('base_url = "http://a"').replace(f'secret_key = "{KEY}"', "")
    assert load_config(write(text), {}).proxy.secret_key is None


def test_empty_secret_key_counts_as_missing(write: Writer) -> None:
    text = service_toml('base_url = "http://a"', '"POST /x" = { price = "1" }')
    err = error(write, text.replace(f'secret_key = "{KEY}"', 'secret_key = "${K:-}"'))
    assert err.key == "proxy.secret_key"


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("FETCH /x", "unknown HTTP method 'FETCH'"),
        ("GETT /x", "did you mean 'GET'"),
        ("GET x", "must start with '/'"),
        ("x", "must start with '/'"),
        ("GET /x extra", "METHOD /path"),
        ("GET /x?a=1", "query string"),
    ],
)
def test_bad_route_key_is_rejected(write: Writer, key: str, problem: str) -> None:
    err = error(write, service_toml('base_url = "http://a"', f'"{key}" = "free"'))
    assert (err.service, err.route) == ("api", key)
    assert problem in err.problem


def test_same_route_written_twice_is_rejected() -> None:
    with pytest.raises(ConfigError, match="same route as '/x'"):
        service("api", base_url="http://a", routes={"/x": free, "* /x": free})


def test_route_value_must_be_free_or_a_table(write: Writer) -> None:
    err = error(write, service_toml('base_url = "http://a"', '"GET /x" = "0.05"'))
    assert err.route == "GET /x" and '"free"' in err.problem


def test_route_table_without_price_is_rejected(write: Writer) -> None:
    err = error(write, service_toml('base_url = "http://a"', '"GET /x" = { description = "d" }'))
    assert "needs price" in err.problem


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("max_body_bytes = -1", "max_body_bytes"),
        ("max_connections = 0", "max_connections"),
        ('forward_client_ip = "yes"', "forward_client_ip"),
        ("timeouts = { connect = 0 }", "timeouts.connect"),
        ("timeouts = { conect = 1 }", "timeouts.conect"),
        ('strip_headers = ["bad header"]', "strip_headers"),
        ('strip_headers = "x-a"', "strip_headers"),
        ("title = 3", "title"),
    ],
)
def test_bad_service_option_names_the_key(write: Writer, body: str, key: str) -> None:
    err = error(write, service_toml(f'base_url = "http://a"\n{body}'))
    assert (err.service, err.key) == ("api", key)


def test_ca_bundle_that_cannot_be_loaded_fails_at_load(write: Writer, tmp_path: Path) -> None:
    # Otherwise `check` passes and every worker dies at startup loading the TLS context.
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    for path, problem in ((tmp_path / "absent.pem", "no such file"), (garbage, "no certificate")):
        err = error(write, service_toml(f'base_url = "https://a"\nca_bundle = "{path}"'))
        assert (err.service, err.key) == ("api", "ca_bundle")
        assert str(path) in err.problem and problem in err.problem


def test_ca_bundle_with_a_certificate_loads(write: Writer) -> None:
    text = service_toml(f'base_url = "https://a"\nca_bundle = "{certifi.where()}"')
    assert load_config(write(text), {}).services[0].ca_bundle == certifi.where()


@pytest.mark.parametrize(
    ("auth", "problem"),
    [
        ('{ bearer = "" }', "empty"),
        ('{ bearer = "a", basic = "b" }', "auth is one of"),
        ('{ header = "X-Key" }', "needs value"),
        ('{ header = "bad name", value = "v" }', "not a valid HTTP header name"),
        ('{ bearer = "a", password = "b" }', "does not go with bearer"),
        ('{ token = "a" }', "unknown key 'token'"),
        ('{ bearer = "a\\r\\nx-injected: 1" }', "control characters"),
    ],
)
def test_bad_auth_is_rejected(write: Writer, auth: str, problem: str) -> None:
    err = error(write, service_toml(f'base_url = "http://a"\nauth = {auth}'))
    assert err.service == "api"
    assert problem in err.problem


def test_preset_needs_api_key(write: Writer) -> None:
    err = error(write, '[services.openai]\npreset = "openai"\nroutes = {}\n')
    assert (err.service, err.key) == ("openai", "api_key")


def test_preset_rejects_auth(write: Writer) -> None:
    err = error(write, '[services.o]\npreset = "openai"\napi_key = "k"\nauth = { bearer = "x" }\n')
    assert err.key == "auth"


def test_api_key_without_preset_points_to_auth(write: Writer) -> None:
    err = error(write, service_toml('base_url = "http://a"\napi_key = "k"'))
    assert err.key == "api_key" and "auth = { bearer" in err.problem


def test_service_without_base_url_is_rejected(write: Writer) -> None:
    err = error(write, "[services.api]\nroutes = {}\n")
    assert (err.service, err.key) == ("api", "base_url")


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ('kind = "tempo"\ncurrency = "0x1"', "methods.m.recipient"),
        (f'kind = "tempo"\nrecipient = "0x12"\ncurrency = "{USDC}"', "methods.m.recipient"),
        (
            f'kind = "tempo"\nrecipient = "{RECIPIENT}"\ncurrency = "{USDC}"\nchain_id = 0',
            "methods.m.chain_id",
        ),
        (
            f'{TEMPO}\nfee_payer_key = "0xzz"',
            "methods.m.fee_payer_key",
        ),
        ('kind = "stripe"\nsecret_key = "sk"\nnetwork_id = ""', "methods.m.network_id"),
        ('kind = "test"\ndecimals = -1', "methods.m.decimals"),
        ('currency = "x"', "methods.m.kind"),
    ],
)
def test_bad_method_names_the_method_and_key(write: Writer, table: str, key: str) -> None:
    err = error(write, f"[methods.m]\n{table}\n")
    assert err.key == key


@pytest.mark.parametrize(
    ("proxy", "key"),
    [
        ("port = 70000", "proxy.port"),
        ('port = "http"', "proxy.port"),
        ('realm = "a b"', "proxy.realm"),
        ('realm = "a\\"b"', "proxy.realm"),
        ("credit_ttl = 0", "proxy.credit_ttl"),
        ('state = ""', "proxy.state"),
        ("categories = [1]", "proxy.categories"),
    ],
)
def test_bad_proxy_setting_names_the_key(write: Writer, proxy: str, key: str) -> None:
    err = error(write, f"[proxy]\n{proxy}\n")
    assert err.key == key and err.line == 2


@pytest.mark.parametrize("key", ["challenge_ttl", "credit_ttl", "lease_seconds"])
def test_durations_past_what_a_date_can_hold_are_rejected(write: Writer, key: str) -> None:
    # 1e12 s is ~31,700 years: every expiry computed from it overflows, on every paid request.
    err = error(write, f"[proxy]\n{key} = 1e12\n")
    assert err.key == f"proxy.{key}" and "at most" in err.problem
    err = error(write, service_toml('base_url = "http://a"\ntimeouts = { read = 1e12 }'))
    assert err.key == "timeouts.read" and "at most" in err.problem


def test_malformed_interpolation_is_rejected(write: Writer) -> None:
    err = error(write, '[proxy]\ntitle = "${NOT CLOSED"\n')
    assert "unterminated" in err.problem and err.key == "proxy.title"
    err = error(write, '[proxy]\ntitle = "${1BAD}"\n')
    assert "not a valid variable reference" in err.problem


def test_charge_rejects_things_that_are_not_methods() -> None:
    with pytest.raises(ConfigError, match="payment methods or their names"):
        charge("1", 3)  # type: ignore[arg-type]


def test_python_preset_with_unknown_option_suggests_closest_name() -> None:
    with pytest.raises(ConfigError, match="did you mean 'title'"):
        openai(api_key="k", routes={}, titel="x")


def test_make_config_validates_like_toml() -> None:
    usdc = tempo("usdc", recipient=RECIPIENT, currency=USDC)
    api = service("api", base_url="http://a", routes={"POST /x": charge("0.0000001", usdc)})
    with pytest.raises(ConfigError) as info:
        make_config(secret_key=KEY, methods=[usdc], services=[api])
    assert (info.value.service, info.value.route, info.value.key) == ("api", "POST /x", "price")


def test_error_message_reads_file_line_service_route_key(write: Writer) -> None:
    err = error(write, FULL_TOML.replace('"0.05"', '"x"'), ENV)
    assert str(err) == (
        f"{err.file}:30, service 'openai', route 'POST /v1/chat/completions', key 'price': "
        "price 'x' is not a decimal number"
    )


@pytest.mark.parametrize(("key", "ok"), [("k" * 31, False), ("k" * 32, True), ("é" * 16, True)])
def test_secret_key_needs_32_bytes(key: str, ok: bool) -> None:
    api = service("api", base_url="http://a", routes={"POST /x": charge("1")})
    if ok:
        make_config(secret_key=key, methods=[test_money("t")], services=[api])
        return
    with pytest.raises(ConfigError) as info:
        make_config(secret_key=key, methods=[test_money("t")], services=[api])
    assert info.value.key == "proxy.secret_key"
    assert "is 31 bytes" in info.value.problem and key not in str(info.value)


def test_proxy_admin_table_loads_and_an_empty_token_leaves_it_off(write: Writer) -> None:
    text = service_toml('base_url = "http://a"').replace(
        "[methods.usdc]", '[proxy.admin]\nbearer_token = "${ADMIN:-}"\n[methods.usdc]'
    )
    assert load_config(write(text), {}).proxy.admin is None
    on = load_config(write(text), {"ADMIN": "t" * 32}).proxy.admin
    assert on is not None and on.allow == ("127.0.0.1/32", "::1/128")
    assert on.bearer_token.value == "t" * 32 and "t" * 32 not in repr(on)
    err = error(write, text.replace('bearer_token = "${ADMIN:-}"', 'bearer_tokn = "x"'))
    assert err.key == "proxy.admin.bearer_tokn" and "did you mean 'bearer_token'" in err.problem
