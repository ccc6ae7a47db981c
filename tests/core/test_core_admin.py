"""The admin API inside the app: off without [proxy.admin], only the allowed addresses with the
token get in, and to everyone else /admin/* is an unknown path, word for word."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from mpp_proxy.config import admin, charge, make_config, methods
from mpp_proxy.config import presets as services
from mpp_proxy.core import Proxy

TOKEN = "core-admin-token-0123456789abcdef0123"


def gateway(**admin_settings: object) -> Proxy:
    config = make_config(
        secret_key="core-admin-secret-0123456789abcdef01",
        state="memory://",
        allow_test_payments=True,
        admin=admin(**admin_settings) if admin_settings else None,  # type: ignore[arg-type]
        methods=[methods.test_money("play")],
        services=[
            services.service("api", base_url="http://127.0.0.1:9", routes={"GET /x": charge("1")})
        ],
    )
    return Proxy(config)


def call(app: Proxy, method: str, path: str, *, client: str, token: str | None) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=(client, 40000))
        headers = {"authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            return await http.request(method, path, headers=headers)

    return asyncio.run(go())


@pytest.fixture
def open_app() -> Iterator[Proxy]:
    app = gateway(bearer_token=TOKEN, allow=["10.0.0.0/8", "2001:db8::/32"])
    yield app


@pytest.mark.parametrize(
    ("client", "token", "status"),
    [
        ("10.1.2.3", TOKEN, 200),
        ("2001:db8::7", TOKEN, 200),
        ("127.0.0.1", TOKEN, 404),  # not in allow, even with the token
        ("192.168.1.1", TOKEN, 404),
        ("10.1.2.3", None, 404),
        ("10.1.2.3", "x" * len(TOKEN), 404),
        ("not-an-address", TOKEN, 404),
    ],
)
def test_only_allowed_addresses_with_the_token_get_in(
    open_app: Proxy, client: str, token: str | None, status: int
) -> None:
    answer = call(open_app, "GET", "/admin/config", client=client, token=token)
    assert answer.status_code == status


def test_refused_and_disabled_admin_answer_exactly_like_an_unknown_path(open_app: Proxy) -> None:
    off = gateway()
    disabled = call(off, "GET", "/admin/payments", client="10.1.2.3", token=TOKEN)
    refused = call(open_app, "GET", "/admin/payments", client="10.1.2.3", token=None)
    assert disabled.status_code == refused.status_code == 404
    assert disabled.content == refused.content
    assert dict(disabled.headers) == dict(refused.headers)


def test_reload_needs_mpp_proxy_serve(open_app: Proxy) -> None:
    answer = call(open_app, "POST", "/admin/reload", client="10.1.2.3", token=TOKEN)
    assert answer.status_code == 501
    assert answer.json()["type"].endswith("/reload-unavailable")


def test_an_admin_token_under_32_bytes_or_an_empty_allow_list_is_a_config_error() -> None:
    from mpp_proxy.config import ConfigError

    with pytest.raises(ConfigError, match="is 5 bytes"):
        admin(bearer_token="short")
    with pytest.raises(ConfigError, match="nobody could reach"):
        admin(bearer_token=TOKEN, allow=[])
    with pytest.raises(ConfigError, match="not an address or network"):
        admin(bearer_token=TOKEN, allow=["10.0.0.0/33"])
