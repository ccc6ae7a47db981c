"""The Limits section's TOML and proxy.py examples load and describe the same gateway, and the
error line it shows is the one `mpp-proxy check` prints."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from limits_support import check, proxy_toml

from mpp_proxy.config import load_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "readme" / "limits.md"
ENV = {
    "MPP_SECRET_KEY": "k" * 32,
    "RECIPIENT_ADDRESS": "0x1111111111111111111111111111111111111111",
    "OPENAI_API_KEY": "sk-1",
}


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def test_the_toml_and_python_examples_are_the_same_gateway(tmp_path: Path) -> None:
    (tmp_path / "proxy.toml").write_text(blocks("toml")[0])
    (tmp_path / "proxy.py").write_text(blocks("python")[0])
    a = load_config(tmp_path / "proxy.toml", ENV)
    b = load_config(tmp_path / "proxy.py", ENV)
    assert dataclasses.replace(a, source="") == dataclasses.replace(b, source="")
    chat = a.services[0].routes[1]
    assert chat.limits.rates[0].burst == 10 and chat.limits.spend[0].per == "day"


def test_the_error_line_shown_is_the_one_check_prints(tmp_path: Path) -> None:
    shown = next(line for line in DOC.read_text().splitlines() if "invalid config" in line)
    text = proxy_toml('"GET /x" = { limits = [{ rate = "lots" }] }', url="http://127.0.0.1:9")
    printed = check(tmp_path, text).stderr.splitlines()[0]
    # The same line but for the directory the file is in.
    assert printed.replace(str(tmp_path) + "/", "") == shown
