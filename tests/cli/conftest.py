"""Fixtures for the CLI tests: served proxies are always stopped, even when a test fails."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from cli_harness import Served


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(*args: str, env: Mapping[str, str] | None = None) -> Served:
        served = Served(["serve", *args], env, tmp_path)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()


@pytest.fixture
def serve_in() -> Iterator[Callable[..., Served]]:
    """`mpp-proxy serve` run from a directory of the test's choice."""
    started: list[Served] = []

    def start(cwd: Path, *args: str, env: Mapping[str, str] | None = None) -> Served:
        served = Served(["serve", *args], env, cwd)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()
