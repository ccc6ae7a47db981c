"""The flush period of metrics and log lines comes from MPP_PROXY_FLUSH_SECONDS; a value that
is not a positive number stops the import with an error that names the variable."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mpp_proxy.observe import flush_seconds


def test_unset_or_empty_is_half_a_second() -> None:
    assert flush_seconds(None) == 0.5
    assert flush_seconds(" ") == 0.5


def test_a_number_of_seconds_is_taken() -> None:
    assert flush_seconds("5") == 5.0
    assert flush_seconds("0.05") == 0.05


@pytest.mark.parametrize("text", ["0", "-1", "soon", "nan", "inf", "1e9"])
def test_anything_else_is_refused_by_name(text: str) -> None:
    with pytest.raises(ValueError, match="MPP_PROXY_FLUSH_SECONDS must be a number of seconds"):
        flush_seconds(text)


def test_the_server_process_reads_it_at_import() -> None:
    code = "import mpp_proxy.observe as o; print(o.FLUSH_SECONDS)"
    env = {**os.environ, "MPP_PROXY_FLUSH_SECONDS": "2.5"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.stdout.strip() == "2.5"
    env["MPP_PROXY_FLUSH_SECONDS"] = "often"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode != 0
    expected = "MPP_PROXY_FLUSH_SECONDS must be a number of seconds above 0 and below 86400"
    assert f"{expected}, got 'often'" in done.stderr
