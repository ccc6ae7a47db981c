"""Processes the benchmark starts: free ports, CPU pinning, readiness, /proc accounting, stop."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    """A port the OS just handed out on 127.0.0.1 (closed again, so the server can bind it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Cores:
    """Which CPUs the server under test and the load side (wrk, upstream, this script) run on."""

    server: str | None
    load: str | None

    @staticmethod
    def detect() -> Cores:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2 and shutil.which("taskset"):
            return Cores(server=str(cpus[0]), load=",".join(str(c) for c in cpus[1:]))
        return Cores(server=None, load=None)

    @property
    def every(self) -> str | None:
        """All the CPUs, for a server that is let free (children inherit the script's pinning)."""
        return ",".join(c for c in (self.server, self.load) if c) or None

    def pin(self, argv: Sequence[str], cpus: str | None) -> list[str]:
        return ["taskset", "-c", cpus, *argv] if cpus else list(argv)


def ensure_debian_packages(commands: Mapping[str, str]) -> list[str]:
    """Install the Debian packages behind the missing commands (we run as root); return them."""
    missing = sorted({pkg for cmd, pkg in commands.items() if shutil.which(cmd) is None})
    if not missing:
        return []
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", *missing]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True, capture_output=True)
        subprocess.run(install, env=env, check=True, capture_output=True)
    return missing


def _stat_fields(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    return text[text.rfind(")") + 2 :].split()


def children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry.name))[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (granian and nginx fork workers)."""
    children = children_map()
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def cpu_seconds(pids: Sequence[int]) -> float:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = _stat_fields(pid)
            total += int(fields[11]) + int(fields[12])  # utime + stime, in clock ticks
    return total / CLK_TCK


def rss_bytes(pids: Sequence[int]) -> int:
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += int(_stat_fields(pid)[21]) * PAGE_SIZE
    return total


def cpu_times() -> tuple[int, int, int]:
    """(steal, busy, total) jiffies over all CPUs from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    # user nice system idle iowait irq softirq steal; guest time is already in user and nice.
    busy = values[0] + values[1] + values[2] + values[5] + values[6]
    return values[7], busy, sum(values[:8])


def answers(port: int, send: bytes, expect: bytes, timeout: float) -> bool:
    """True once a connection to port, sent `send`, reads back something starting with `expect`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(send)
                if sock.recv(16).startswith(expect):
                    return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def http_ready(port: int, path: str, timeout: float) -> bool:
    """True once a GET on path gets any HTTP response head."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
    return answers(port, request, b"HTTP/1.", timeout)


def redis_ready(port: int, timeout: float) -> bool:
    """True once a Redis server answers PING on port."""
    return answers(port, b"PING\r\n", b"+PONG", timeout)


class Server:
    """One server process group we started; stopped (whole group) by stop().

    Ready once a GET on `ready_path` gets an HTTP answer, or once `ready(port, timeout)` says so.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        port: int,
        logs: Path,
        env: Mapping[str, str] | None = None,
        ready_path: str = "/",
        cwd: Path | None = None,
        ready: Callable[[int, float], bool] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.port = port
        self.ready_path = ready_path
        self.log_path = logs / f"{name}.log"
        self._env = {**os.environ, **(env or {})}
        self._cwd = cwd
        self._ready = ready or (lambda port, timeout: http_ready(port, self.ready_path, timeout))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        log = self.log_path.open("wb")
        # Own session = own process group, so stop() reaches forked workers too.
        self.proc = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self._env,
            cwd=self._cwd,
            start_new_session=True,
        )
        log.close()
        if not self._ready(self.port, timeout) or self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            self.stop()
            raise RuntimeError(f"{self.name} did not come up on port {self.port}:\n{tail}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def tree(self) -> list[int]:
        return process_tree(self.pid)

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM to the group, SIGKILL after `grace` seconds."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)
