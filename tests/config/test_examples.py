"""The shipped examples/ configs load, and the TOML and Python OpenAI examples agree."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from config_samples import RECIPIENT

from mpp_proxy.config import config_warnings, load_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FILES = sorted([*EXAMPLES.glob("*.toml"), *EXAMPLES.glob("*.py")])


def fake_env(path: Path) -> dict[str, str]:
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", path.read_text()))
    names |= set(re.findall(r"env\(\s*\"([A-Za-z_][A-Za-z0-9_]*)\"\s*\)", path.read_text()))
    env = {name: f"example-{name.lower()}-value-long-enough-for-a-key" for name in names}
    env["RECIPIENT_ADDRESS"] = RECIPIENT
    return env


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_example_loads_without_warnings(path: Path) -> None:
    config = load_config(path, fake_env(path))
    assert config.services
    assert not [w for w in config_warnings(config) if "allow_test_payments" in w]


def test_python_example_matches_the_toml_example_it_translates() -> None:
    toml = EXAMPLES / "openai-tempo.toml"
    py = EXAMPLES / "proxy.py"
    env = {**fake_env(toml), **fake_env(py)}
    a = dataclasses.replace(load_config(toml, env), source="")
    b = dataclasses.replace(load_config(py, env), source="")
    assert a == b
