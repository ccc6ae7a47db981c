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
        # No drain on stop (SIGTERM) unless a test asks for one: a later flag wins.
        served = Served(["serve", "--drain-seconds", "0", *args], env, tmp_path)
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()
