"""Fixtures for the end-to-end payment tests: a local Tempo chain, upstreams, served proxies."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.parties import HAVE_FAKE_STRIPE, Served, Wallet, serve_py
from tests.support.anvil import Anvil
from tests.support.openai_upstream import OpenAIUpstream
from tests.support.upstream import Upstream


@pytest.fixture(scope="session")
def chain() -> Iterator[Anvil]:
    with Anvil() as node:
        yield node


@pytest.fixture(scope="session")
def echo() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


@pytest.fixture(scope="session")
def openai_upstream() -> Iterator[OpenAIUpstream]:
    with OpenAIUpstream() as up:
        yield up


@pytest.fixture(scope="session")
def stripe_api() -> Iterator[str | None]:
    """The payments engineer's fake Stripe API on loopback, when it exists."""
    if not HAVE_FAKE_STRIPE:
        yield None
        return
    from tests.support import fake_stripe

    with fake_stripe.FakeStripe() as api:  # type: ignore[attr-defined]
        yield api.url


@pytest.fixture(scope="session")
def proxy(
    tmp_path_factory: pytest.TempPathFactory,
    chain: Anvil,
    echo: Upstream,
    openai_upstream: OpenAIUpstream,
    stripe_api: str | None,
) -> Iterator[Served]:
    """The main proxy (proxy.py, granian, SQLite state) with every method."""
    served = serve_py(
        tmp_path_factory.mktemp("proxy"),
        chain=chain,
        echo=echo,
        openai_upstream=openai_upstream,
        stripe_url=stripe_api,
    )
    try:
        yield served
    finally:
        served.server.stop()


@pytest.fixture(scope="session")
def short_proxy(
    tmp_path_factory: pytest.TempPathFactory,
    chain: Anvil,
    echo: Upstream,
    openai_upstream: OpenAIUpstream,
    stripe_api: str | None,
) -> Iterator[Served]:
    """The same proxy with challenges that expire after two seconds."""
    served = serve_py(
        tmp_path_factory.mktemp("short"),
        chain=chain,
        echo=echo,
        openai_upstream=openai_upstream,
        stripe_url=stripe_api,
        challenge_ttl=2.0,
    )
    try:
        yield served
    finally:
        served.server.stop()


@pytest.fixture
def wallet(chain: Anvil) -> Wallet:
    return Wallet(chain)


@pytest.fixture
def client(proxy: Served) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=proxy.url, timeout=60) as c:
        yield c
