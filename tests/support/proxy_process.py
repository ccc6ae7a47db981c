"""The proxy as a process, the way operators run it: granian serving an ASGI target, or the
`mpp-proxy serve` command; its port, readiness, output, stop, kill -9, restart and memory."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def process_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without our MPP_* settings (a developer's own must not leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPP_")}
    env["PYTHONUNBUFFERED"] = "1"
    # Test ASGI targets and proxy.py configs import from the repository.
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra or {})
    return env


def _tree(pid: int) -> list[int]:
    """pid and its descendants (granian forks its workers), read from /proc."""
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
    return pids


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _rss(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class ProxyProcess:
    """One proxy process group on a free loopback port; build it with `granian()` or `serve()`.

    It runs in `folder` (relative paths in its config land there) and appends its stdout and
    stderr to `proxy-<port>.out` / `.err` there. `start()` waits until GET `ready` answers 200
    (or, with `ready=None`, until the port accepts); `start()` again after `stop()` or `kill9()`
    serves on the same port. Built with port 0, it listens where the OS says: `start()` reads
    the port from the startup banner (`banner_url()`).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        port: int,
        folder: Path,
        env: Mapping[str, str] | None = None,
        ready: str | None = "/healthz",
    ) -> None:
        self.argv = list(argv)
        self.port = port
        self.folder = folder
        self.env = process_env(env)
        self.ready = ready
        name = port or f"any-{id(self):x}"
        self.stdout_path = folder / f"proxy-{name}.out"
        self.stderr_path = folder / f"proxy-{name}.err"
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None  # of the last process, once it ended

    @classmethod
    def granian(
        cls,
        target: str,
        *,
        folder: Path,
        config: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> ProxyProcess:
        """`granian` (uvloop, HTTP/1, one worker) serving `target`; `config` is MPP_PROXY_CONFIG
        for `mpp_proxy:app`."""
        port = free_port()
        argv = [
            str(BIN / "granian"),
            *("--interface", "asgi", "--loop", "uvloop", "--http", "1", "--workers", "1"),
            *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
            target,
        ]
        env = dict(env or {})
        if config is not None:
            env["MPP_PROXY_CONFIG"] = str(config)
        return cls(argv, port=port, folder=folder, env=env)

    @classmethod
    def serve(
        cls,
        *args: str,
        folder: Path,
        env: Mapping[str, str] | None = None,
        ready: str | None = "/healthz",
        listen: bool = True,
    ) -> ProxyProcess:
        """The operator's `mpp-proxy serve <args>`, told to listen on a free loopback port (with
        `listen=False` the arguments or environment say where). No drain on SIGTERM unless the
        arguments ask for one (a later flag wins)."""
        argv = [sys.executable, "-m", "mpp_proxy", "serve", "--drain-seconds", "0", *args]
        return cls.command(argv, folder=folder, env=env, ready=ready, listen=listen)

    @classmethod
    def command(
        cls,
        argv: Sequence[str],
        *,
        folder: Path,
        env: Mapping[str, str] | None = None,
        ready: str | None = "/healthz",
        listen: bool = True,
    ) -> ProxyProcess:
        """Any command line that serves the proxy; `listen` adds --host and a free --port."""
        if not listen:
            return cls(argv, port=0, folder=folder, env=env, ready=ready)
        port = free_port()
        argv = [*argv, "--host", "127.0.0.1", "--port", str(port)]
        return cls(argv, port=port, folder=folder, env=env, ready=ready)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ProxyProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 30.0) -> ProxyProcess:
        assert self.proc is None, "already running"
        with self.stdout_path.open("ab") as out, self.stderr_path.open("ab") as err:
            # Its own session, so stop() and kill9() reach the workers too.
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.folder,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        if self.port == 0:
            self.port = int(self.banner_url(timeout).rsplit(":", 1)[1])
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"the proxy did not start on {self.port}: {self.argv}\n{self.output()[-4000:]}"
                )
            time.sleep(0.05)
        return self

    def banner_url(self, timeout: float = 20.0) -> str:
        """The URL the startup banner says the server listens on."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in _read(self.stdout_path).splitlines():
                if line.startswith("  listening  "):
                    return line.split()[1]
            if self.proc is None or self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"no listening line in the banner:\n{self.output()[-4000:]}")

    def _answers(self) -> bool:
        if self.ready is None:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return False
        try:
            return httpx.get(self.url + self.ready, timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def streams(self) -> tuple[str, str]:
        """Everything it wrote so far, over all its starts: (stdout, stderr)."""
        return _read(self.stdout_path), _read(self.stderr_path)

    def output(self) -> str:
        out, err = self.streams()
        return out + err

    def rss_bytes(self) -> int:
        """Resident memory of the whole process tree (granian and its workers)."""
        assert self.proc is not None
        return sum(_rss(pid) for pid in _tree(self.proc.pid))

    def kill9(self) -> None:
        """SIGKILL to the whole process group at once, the way a crash would: no shutdown code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        """SIGTERM to the group and 10 s to finish, then SIGKILL to whatever is left."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.returncode = proc.returncode
        # A worker that outlived the main process would keep the port.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
