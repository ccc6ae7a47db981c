"""Fixtures for the end-to-end payment tests: a local Tempo chain, upstreams, served proxies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import STRIPE_KEY
from tests.e2e.parties import Deployment, Wallet, serve_py
from tests.support.anvil import Anvil
from tests.support.fake_stripe import FakeStripe
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
def stripe_api() -> Iterator[FakeStripe]:
    """The payments engineer's fake Stripe API on loopback."""
    with FakeStripe(secret_key=STRIPE_KEY) as api:
        yield api


def _serving(
    folder: Path,
    chain: Anvil,
    echo: Upstream,
    openai_upstream: OpenAIUpstream,
    stripe_api: FakeStripe,
    **options: float | str | None,
) -> Iterator[Deployment]:
    served = serve_py(
        folder,
        chain=chain,
        echo=echo,
        openai_upstream=openai_upstream,
        stripe_url=stripe_api.url,
        **options,
    )
    try:
        yield served
    finally:
        served.process.stop()


@pytest.fixture(scope="session")
def proxy(
    tmp_path_factory: pytest.TempPathFactory,
    chain: Anvil,
    echo: Upstream,
    openai_upstream: OpenAIUpstream,
    stripe_api: FakeStripe,
) -> Iterator[Deployment]:
    """The main proxy (proxy.py, granian, SQLite state) with every method, settling before
    forwarding (credits on failure); `after_proxy` settles after the upstream answered."""
    folder = tmp_path_factory.mktemp("proxy")
    yield from _serving(folder, chain, echo, openai_upstream, stripe_api, settle="before")


@pytest.fixture(scope="session")
def short_proxy(
    tmp_path_factory: pytest.TempPathFactory,
    chain: Anvil,
    echo: Upstream,
    openai_upstream: OpenAIUpstream,
    stripe_api: FakeStripe,
) -> Iterator[Deployment]:
    """The same proxy with challenges and credits that expire after two seconds."""
    folder = tmp_path_factory.mktemp("short")
    yield from _serving(
        folder,
        chain,
        echo,
        openai_upstream,
        stripe_api,
        challenge_ttl=2.0,
        credit_ttl=2.0,
        settle="before",
    )


@pytest.fixture(scope="session")
def after_proxy(
    tmp_path_factory: pytest.TempPathFactory,
    chain: Anvil,
    echo: Upstream,
    openai_upstream: OpenAIUpstream,
    stripe_api: FakeStripe,
) -> Iterator[Deployment]:
    """The same proxy with each method's own timing: all but Stripe settle after success."""
    folder = tmp_path_factory.mktemp("after")
    yield from _serving(folder, chain, echo, openai_upstream, stripe_api)


@pytest.fixture
def wallet(chain: Anvil, stripe_api: FakeStripe) -> Wallet:
    return Wallet(chain, stripe_api)


@pytest.fixture
def client(proxy: Deployment) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=proxy.url, timeout=60) as c:
        yield c
