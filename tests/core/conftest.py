"""Core test fixtures: loopback upstreams, a closed port, and a served proxy with test services."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from core_harness import Served, config, service

from mpp_proxy.config.model import Route
from mpp_proxy.core import Proxy
from tests.support import ports
from tests.support.upstream import Upstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


@pytest.fixture(scope="module")
def closed_port() -> int:
    """A loopback port with nothing listening (bound then closed)."""
    return ports.closed_port()


@pytest.fixture(scope="module")
def proxy(upstream: Upstream) -> Proxy:
    return Proxy(
        config(
            service("up", upstream.url),
            service(
                "keyed",
                upstream.url,
                auth=None,
                strip_headers=("openai-organization", "x-tenant"),
                forward_client_ip=True,
            ),
            service(
                "small",
                upstream.url,
                max_body_bytes=1000,
                routes=(
                    Route(method="POST", pattern="/echo/limited", max_body_bytes=100),
                    Route(method="*", pattern="/*"),
                ),
            ),
            service(
                "strict",
                upstream.url,
                routes=(
                    Route(method="GET", pattern="/echo/items/:id"),
                    Route(method="POST", pattern="/echo/items"),
                ),
            ),
        )
    )


@pytest.fixture(scope="module")
def served(proxy: Proxy) -> Iterator[Served]:
    with Served(proxy) as s:
        yield s
