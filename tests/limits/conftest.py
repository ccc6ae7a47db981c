"""Fixtures for the limit tests: a loopback upstream and a private redis-server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis_server import redis_port  # noqa: F401 (a fixture: found here)
from tests.support.upstream import Upstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up
