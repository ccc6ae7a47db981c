"""Discovery fixtures: the test upstream and a proxy serving the discovery config over loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from discovery_serving import served_config

from mpp_proxy.config.model import Config
from mpp_proxy.core import Proxy
from tests.support.served import Served
from tests.support.upstream import Upstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


@pytest.fixture(scope="module")
def config(upstream: Upstream) -> Config:
    return served_config(upstream.url)


@pytest.fixture(scope="module")
def served(config: Config) -> Iterator[Served]:
    with Served(Proxy(config)) as s:
        yield s
