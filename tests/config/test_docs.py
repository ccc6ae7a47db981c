"""The config reference's TOML and proxy.py examples load and describe the same gateway."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from config_samples import RECIPIENT, Writer

from mpp_proxy.config import load_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "readme" / "config.md"
ENV = {
    "MPP_SECRET_KEY": "k" * 32,
    "RECIPIENT_ADDRESS": RECIPIENT,
    "STRIPE_SECRET_KEY": "sk_test_1",
    "STRIPE_NETWORK_ID": "net_1",
    "OPENAI_API_KEY": "sk-1",
    "WEATHER_KEY": "w-1",
}


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def test_reference_toml_and_python_examples_are_equal(write: Writer) -> None:
    toml = blocks("toml")[0]
    python = next(b for b in blocks("python") if "config = make_config" in b)
    a = load_config(write(toml, "proxy.toml"), ENV)
    b = load_config(write(python, "proxy.py"), ENV)
    assert dataclasses.replace(a, source="") == dataclasses.replace(b, source="")
