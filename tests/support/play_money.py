"""Test money in tests: a config whose paid routes take it, and a fresh credential for one URL."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

import httpx
from mpp.runtime import CredentialParams

from mpp_proxy.cli.pay import test_money_client
from mpp_proxy.cli.wire import parse_offers


async def buy(url: str, verify: ssl.SSLContext | bool = True) -> str:
    """A fresh test-money credential for `url` (a GET on a paid route)."""
    async with httpx.AsyncClient(verify=verify) as client:
        r = await client.get(url)
    assert r.status_code == 402, r.text
    offer = next(o for o in parse_offers(r.headers.get_list("www-authenticate")))
    method: Any = test_money_client()
    credential: str = await method.create_credential(CredentialParams(challenge=offer.challenge))
    return credential


def play_money_config(
    upstream: str,
    services: Mapping[str, Mapping[str, str]],
    *,
    secret: str,
    state: str | None = "memory://",
    proxy: str = "",
    method: str = "",
) -> str:
    """A proxy.toml whose services all forward to `upstream`; each route is "free" or costs
    that much test money ("0.01"). `state=None` keeps the default; `proxy` adds [proxy] lines,
    `method` lines to the test-money method's table."""
    lines = ["[proxy]", f'secret_key = "{secret}"', "allow_test_payments = true"]
    if state is not None:
        lines.append(f'state = "{state}"')
    lines += [proxy, "", "[methods.play]", 'kind = "test"', method]
    for service, routes in services.items():
        lines += ["", f"[services.{service}]", f'base_url = "{upstream}"', ""]
        lines.append(f"[services.{service}.routes]")
        for route, price in routes.items():
            value = '"free"' if price == "free" else f'{{ price = "{price}", pay_with = ["play"] }}'
            lines.append(f'"{route}" = {value}')
    return "\n".join(lines) + "\n"
