"""Helpers for driving the `mpp-proxy` command line as a subprocess (imported by tests/cli)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.support.proxy_process import ROOT, process_env

EXAMPLES = ROOT / "examples"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 60, cwd: Path | None = None
) -> Result:
    done = subprocess.run(
        [sys.executable, "-m", "mpp_proxy", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=process_env(env),
        cwd=cwd or ROOT,
    )
    return Result(done.returncode, done.stdout, done.stderr)
