"""Helpers for driving the `mpp-proxy` command line as a subprocess (imported by tests/cli)."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

# Re-exported: the CLI tests take their ports from here.
from tests.support.ports import closed_port as closed_port
from tests.support.ports import free_port as free_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPP_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 60, cwd: Path | None = None
) -> Result:
    done = subprocess.run(
        [sys.executable, "-m", "mpp_proxy", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(env),
        cwd=cwd or REPO,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def wait_for_port(port: int, proc: subprocess.Popen[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"server exited with {proc.returncode}:\n{out}\n{err}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port} after {timeout}s")


class Served:
    """A running `mpp-proxy serve`; stopped (and killed if need be) by the fixture."""

    def __init__(self, args: list[str], env: Mapping[str, str] | None, cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mpp_proxy", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(env),
            cwd=cwd,
            start_new_session=True,
        )

        self.early = ""  # stdout read before stop(), by banner_url

    def stop(self) -> tuple[str, str]:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                out, err = self.proc.communicate(timeout=10)
                return self.early + out, err
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
        out, err = self.proc.communicate()
        return self.early + out, err


def banner_url(served: Served, timeout: float = 20) -> str:
    """The URL the startup banner says the server listens on, read from its stdout.

    Read from the pipe itself, unbuffered, and kept in `served.early`: stop() still returns
    the whole output."""
    assert served.proc.stdout is not None
    fd = served.proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in served.early.splitlines():
            if line.startswith("  listening  "):
                return line.split()[1]
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            served.early += chunk.decode(errors="replace")
    out, err = served.stop()
    raise AssertionError(f"no banner; the server said:\n{out}\n{err}")
