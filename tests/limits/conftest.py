"""Fixtures for the limit tests: a loopback upstream and a private redis-server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis_server import redis_server
from tests.support.upstream import Upstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


@pytest.fixture(scope="session")
def redis_port() -> Iterator[int]:
    try:
        with redis_server() as port:
            yield port
    except RuntimeError as exc:
        pytest.fail(str(exc))
