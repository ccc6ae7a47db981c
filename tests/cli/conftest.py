"""Fixtures for the CLI tests: served proxies are always stopped, even when a test fails."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from tests.support.proxy_process import ProxyProcess


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ProxyProcess]]:
    """`mpp-proxy serve <args>` running in tmp_path, once its port accepts connections."""
    started: list[ProxyProcess] = []

    def start(*args: str, env: Mapping[str, str] | None = None) -> ProxyProcess:
        served = ProxyProcess.serve(*args, folder=tmp_path, env=env, ready=None)
        started.append(served)
        return served.start()

    yield start
    for served in started:
        served.stop()
