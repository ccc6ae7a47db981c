"""Bad limit settings are config errors naming the file, service, route and key: `mpp-proxy
check` exits 2 with one line and no traceback. Good ones load the same from both front ends."""

from __future__ import annotations

from pathlib import Path

import pytest
from limits_support import PAID, check, proxy_toml

from mpp_proxy.config import ConfigError, load_config
from mpp_proxy.config.model import Capacity, RateLimit

ROUTE = '"GET /x"'


@pytest.mark.parametrize(
    ("route", "service", "proxy", "key", "says"),
    [
        ('{ limits = [{ rate = "lots" }] }', "", "", "limits[0].rate", "not a rate"),
        ('{ limits = [{ rate = "1/m", burst = -1 }] }', "", "", "limits[0].burst", "between 1"),
        ('{ limits = [{ rate = "1/m", key = "cookie" }] }', "", "", "limits[0].key", "key"),
        (
            '{ limits = [{ rate = "1/m", key = "header:bad header" }] }',
            "",
            "",
            "limits[0].key",
            "header name",
        ),
        ('{ limits = [{ rat = "1/m" }] }', "", "", "limits[0].rat", "did you mean 'rate'"),
        (
            f'{{ {PAID}, max_spend = {{ amount = "5", currency = "eur" }} }}',
            "",
            "",
            "max_spend.currency",
            "priced in TEST",
        ),
        (
            f'{{ {PAID}, max_spend = {{ amount = "5", per = "fortnight" }} }}',
            "",
            "",
            "max_spend.per",
            "unknown window",
        ),
        (
            f'{{ {PAID}, max_spend = {{ amount = "0.0000001" }} }}',
            "",
            "",
            "max_spend.amount",
            "decimal places",
        ),
        ('{ on_store_error = "sometimes" }', "", "", "on_store_error", "closed"),
        ('"free"', 'shed_above = "fast"', "", "shed_above", "duration"),
        ('"free"', "queue = 5", "", "queue", "max_in_flight"),
        ('"free"', "max_in_flight = 0", "", "max_in_flight", "at least 1"),
        ('"free"', 'max_spend = { amount = "1" }', "", "max_spend", "no paid route"),
        ('"free"', "", 'trusted_proxies = ["10.0.0.0/33"]', "proxy.trusted_proxies", "10.0.0.0/33"),
        ('"free"', "", 'trusted_proxies = ["10.0.0.1/8"]', "proxy.trusted_proxies", "host bits"),
        ('"free"', "", 'forwarded_header = "x-real-ip"', "proxy.forwarded_header", "forwarded"),
    ],
)
def test_a_bad_limit_setting_is_one_line_naming_where_it_is_and_exit_2(
    tmp_path: Path, route: str, service: str, proxy: str, key: str, says: str
) -> None:
    text = proxy_toml(f"{ROUTE} = {route}", url="http://127.0.0.1:9", service=service, proxy=proxy)
    done = check(tmp_path, text)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("mpp-proxy: invalid config: "), done.stderr
    assert "proxy.toml" in lines[0]
    assert f"key '{key}'" in lines[0]
    assert says in lines[0]
    if not key.startswith("proxy."):
        assert "service 'api'" in lines[0]
    if not (service or proxy):
        assert f"route '{ROUTE.strip(chr(34))}'" in lines[0]


def test_a_table_without_price_holding_more_than_limits_is_still_refused(tmp_path: Path) -> None:
    text = proxy_toml(f'{ROUTE} = {{ description = "d", limits = []}}', url="http://a")
    path = tmp_path / "proxy.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="needs price"):
        load_config(path, {})


def test_toml_and_python_give_the_same_limits(tmp_path: Path) -> None:
    toml = proxy_toml(
        '"GET /v1/models" = { limits = [{ rate = "10/second", key = "ip" }] }\n'
        f'"POST /v1/chat" = {{ {PAID}, limits = [{{ rate = "60/minute", burst = 10, '
        'key = "payer" }], max_spend = { amount = "5.00", per = "day" } }',
        url="http://a",
        service='max_in_flight = 8\nqueue = 4\nqueue_timeout = "1500ms"\nshed_above = "5s"',
        proxy='trusted_proxies = ["10.0.0.0/8"]',
    )
    (tmp_path / "proxy.toml").write_text(toml)
    python = f"""
from mpp_proxy import Proxy, charge, free, services, rate_limit, spend_cap
from mpp_proxy.config.methods import test_money

play = test_money("play")
config = Proxy(
    secret_key="{"limits-test-secret-0123456789abcdef0123"}",
    realm="limits.test",
    state="memory://",
    allow_test_payments=True,
    trusted_proxies=["10.0.0.0/8"],
    methods=[play],
    services=[
        services.service(
            "api",
            base_url="http://a",
            timeouts={{"connect": 2, "read": 15, "write": 5, "pool": 1}},
            max_in_flight=8,
            queue=4,
            queue_timeout="1500ms",
            shed_above=5,
            routes={{
                "GET /v1/models": free(limits=[rate_limit("10/second", key="ip")]),
                "POST /v1/chat": charge(
                    "0.05",
                    play,
                    limits=[{{"rate": "60/minute", "burst": 10, "key": "payer"}}],
                    max_spend=spend_cap("5.00", per="day"),
                ),
            }},
        )
    ],
)
"""
    (tmp_path / "proxy.py").write_text(python)
    a = load_config(tmp_path / "proxy.toml", {})
    b = load_config(tmp_path / "proxy.py", {})
    assert a.services == b.services
    assert a.proxy.trusted_proxies == b.proxy.trusted_proxies == ("10.0.0.0/8",)
    service = a.services[0]
    assert service.capacity == Capacity(8, 4, 1.5, 5.0)
    chat = service.routes[1]
    assert chat.limits.rates == (RateLimit(60, 60.0, 10, "payer", "", "60/minute"),)
    assert chat.limits.spend[0].currency == "TEST" and chat.limits.spend[0].decimals == 6
