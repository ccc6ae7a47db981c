"""Fixtures for the config tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from config_samples import Writer


@pytest.fixture
def write(tmp_path: Path) -> Writer:
    """Write dedented text to tmp_path/name and return the path."""

    def writer(text: str, name: str = "proxy.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return writer
