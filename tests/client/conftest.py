"""Fixtures for the client tests: gateways paid with test money or Tempo on anvil."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from client_gateway import RECIPIENT, Gateway, serve_gateway

from mpp_proxy.config import methods
from tests.support.anthropic_upstream import AnthropicUpstream
from tests.support.anvil import PATH_USD, Anvil
from tests.support.openai_upstream import OpenAIUpstream
from tests.support.upstream import Upstream


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[Upstream, OpenAIUpstream, AnthropicUpstream]]:
    with Upstream() as echo, OpenAIUpstream() as openai, AnthropicUpstream() as anthropic:
        yield echo, openai, anthropic


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    upstreams: tuple[Upstream, OpenAIUpstream, AnthropicUpstream],
) -> Iterator[Gateway]:
    """Paid with test money."""
    yield from serve_gateway(
        methods.test_money("play"), tmp_path_factory.mktemp("money"), upstreams
    )


@pytest.fixture(scope="module")
def credit_gateway(
    tmp_path_factory: pytest.TempPathFactory,
    upstreams: tuple[Upstream, OpenAIUpstream, AnthropicUpstream],
) -> Iterator[Gateway]:
    """Paid with test money settled before forwarding: a failed request's payment is a credit."""
    yield from serve_gateway(
        methods.test_money("play", settlement="before"),
        tmp_path_factory.mktemp("credit"),
        upstreams,
    )


@pytest.fixture(scope="module")
def chain() -> Iterator[Anvil]:
    with Anvil() as node:
        yield node


@pytest.fixture(scope="module")
def tempo_gateway(
    tmp_path_factory: pytest.TempPathFactory,
    upstreams: tuple[Upstream, OpenAIUpstream, AnthropicUpstream],
    chain: Anvil,
) -> Iterator[Gateway]:
    """Paid in pathUSD on a local Tempo chain."""
    usd = methods.tempo(
        "usd", recipient=RECIPIENT, currency=PATH_USD, chain_id=31337, rpc_url=chain.rpc_url
    )
    yield from serve_gateway(usd, tmp_path_factory.mktemp("tempo"), upstreams)
