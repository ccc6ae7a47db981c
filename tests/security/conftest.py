"""Security fixtures: the proxy served by granian from a proxy.toml, a test and an evil upstream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.security.evil_upstream import EvilUpstream
from tests.security.gateway import gateway_process
from tests.support.proxy_process import ProxyProcess
from tests.support.upstream import Upstream


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


@pytest.fixture(scope="session")
def evil() -> Iterator[EvilUpstream]:
    with EvilUpstream({}) as up:
        yield up


@pytest.fixture(scope="session")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: Upstream, evil: EvilUpstream
) -> Iterator[ProxyProcess]:
    with gateway_process(tmp_path_factory.mktemp("gateway"), upstream.url, evil.url) as g:
        yield g
