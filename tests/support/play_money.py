"""Paying with the test-money method from a test: a fresh credential for one paid URL."""

from __future__ import annotations

import ssl
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
