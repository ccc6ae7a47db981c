"""Load and measurement: wrk runs and their parsing, the SSE client, stub_status, CPU usage."""

from __future__ import annotations

import asyncio
import re
import resource
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11

from benchmarks.procs import CLK_TCK, cpu_seconds, cpu_times

_UNITS_TIME = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}
_UNITS_BYTES = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not match:
        raise ValueError(f"unparsable wrk duration {text!r}")
    return float(match.group(1)) * _UNITS_TIME[match.group(2)]


def _bytes(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(B|KB|MB|GB|TB)", text)
    if not match:
        raise ValueError(f"unparsable wrk size {text!r}")
    return float(match.group(1)) * _UNITS_BYTES[match.group(2)]


@dataclass(frozen=True, slots=True)
class WrkResult:
    """One wrk run, parsed."""

    connections: int
    seconds: float
    requests: int
    rps: float
    bytes_per_s: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int
    cpu_s: float

    @property
    def mib_per_s(self) -> float:
        return self.bytes_per_s / 1024**2

    def as_dict(self) -> dict[str, Any]:
        return {
            "connections": self.connections,
            "seconds": self.seconds,
            "requests": self.requests,
            "rps": round(self.rps, 1),
            "mib_per_s": round(self.mib_per_s, 2),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "non_2xx": self.non_2xx,
            "socket_errors": self.socket_errors,
            "wrk_cpu_s": round(self.cpu_s, 2),
        }


def parse_wrk(text: str, connections: int, cpu_s: float) -> WrkResult:
    done = re.search(r"(\d+) requests in ([\d.]+\w+), ([\d.]+\w+) read", text)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    transfer = re.search(r"Transfer/sec:\s+([\d.]+\w+)", text)
    if not (done and rps and transfer):
        raise RuntimeError(f"wrk output not understood:\n{text}")
    latency = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)", text, re.M))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    return WrkResult(
        connections=connections,
        seconds=_ms(done.group(2)) / 1e3,
        requests=int(done.group(1)),
        rps=float(rps.group(1)),
        bytes_per_s=_bytes(transfer.group(1)),
        p50_ms=_ms(latency["50"]) if "50" in latency else float("nan"),
        p99_ms=_ms(latency["99"]) if "99" in latency else float("nan"),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
        cpu_s=cpu_s,
    )


def wrk(
    url: str,
    connections: int,
    seconds: float,
    pin: list[str],
    script: Path | None = None,
) -> WrkResult:
    """One wrk run, bounded in time (wrk -d) and killed if it overruns."""
    argv = [
        *pin,
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "--timeout",
        "10s",
    ]
    if script is not None:
        argv += ["-s", str(script)]
    argv.append(url)
    # wrk is our only child reaped in this window, so the children's rusage delta is its CPU.
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = proc.communicate(timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise RuntimeError(f"wrk overran its {seconds}s bound on {url}") from None
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{out.decode(errors='replace')}")
    return parse_wrk(out.decode(errors="replace"), connections, cpu_s)


def post_script(path: Path, size: int) -> Path:
    """A wrk lua script that POSTs `size` bytes per request."""
    path.write_text(
        'wrk.method = "POST"\n'
        f'wrk.body = string.rep("a", {size})\n'
        'wrk.headers["Content-Type"] = "application/octet-stream"\n'
    )
    return path


def headers_script(path: Path, headers: Mapping[str, str]) -> Path:
    lines = [f"wrk.headers[{k!r}] = {v!r}" for k, v in headers.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def stub_status_accepts(port: int) -> int:
    """nginx's accepted-connections counter (this probe's own connection included)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /nginx_status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    match = re.search(rb"\n\s*(\d+) (\d+) (\d+)", data)
    if not match:
        raise RuntimeError(f"no stub_status in {data!r}")
    return int(match.group(1))


class UpstreamConnections:
    """TCP connections the upstream accepted at steady state, inside one measured run.

    wrk opens its connections as a run starts and drops them, responses in flight, as it ends:
    a proxy then opens upstream connections to replace the ones it had to abort. Counting from
    `settle` seconds after start() to `settle` seconds before the run's end leaves both edges
    out, so a pool that is reused shows 0. Call start() right before the run, stop() after it.
    """

    def __init__(self, status_port: int, seconds: float, settle: float = 1.0) -> None:
        self.port = status_port
        # A short run still gets a window of at least half its length.
        self.settle = min(settle, seconds / 4)
        self.seconds = seconds
        self._counts: list[int] = []
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        began = time.monotonic()
        try:
            for at in (self.settle, self.seconds - self.settle):
                time.sleep(max(0.0, began + at - time.monotonic()))
                self._counts.append(stub_status_accepts(self.port))
        except BaseException as exc:  # reported by stop(), in the caller's thread
            self._error = exc

    def start(self) -> None:
        self._thread = threading.Thread(target=self._sample, name="upstream-accepts", daemon=True)
        self._thread.start()

    @property
    def window(self) -> tuple[float, float]:
        """Seconds after start() the count began and ended."""
        return (round(self.settle, 2), round(self.seconds - self.settle, 2))

    def stop(self) -> int:
        assert self._thread is not None
        self._thread.join(timeout=self.seconds + 10)
        if self._error is not None or len(self._counts) != 2:
            raise RuntimeError(f"stub_status not sampled: {self._error!r}")
        # The second probe's own connection is the one accept we made in the window.
        return self._counts[1] - self._counts[0] - 1


@dataclass
class Usage:
    """CPU seconds per process tree and the share of CPU time stolen by the hypervisor."""

    cpu_s: dict[str, float] = field(default_factory=dict)
    steal_pct: float = 0.0
    # CPU seconds the whole machine was busy (every process), to expose neighbours' load.
    machine_busy_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "cpu_s": {k: round(v, 2) for k, v in self.cpu_s.items()},
            "steal_pct": round(self.steal_pct, 2),
            "machine_busy_s": round(self.machine_busy_s, 2),
        }


class UsageMeter:
    """Reads /proc before and after a scenario for the named process trees."""

    def __init__(self, trees: Mapping[str, Sequence[int]]) -> None:
        self.trees = dict(trees)
        self._cpu: dict[str, float] = {}
        self._times = (0, 0, 0)

    def start(self) -> None:
        self._cpu = {name: cpu_seconds(pids) for name, pids in self.trees.items()}
        self._times = cpu_times()

    def stop(self) -> Usage:
        steal, busy, total = cpu_times()
        d_total = max(1, total - self._times[2])
        return Usage(
            cpu_s={name: cpu_seconds(pids) - self._cpu[name] for name, pids in self.trees.items()},
            steal_pct=100.0 * (steal - self._times[0]) / d_total,
            machine_busy_s=(busy - self._times[1]) / CLK_TCK,
        )


# ---------------------------------------------------------------------------- SSE client


async def _one_stream(port: int, path: str, events: int) -> float:
    """Seconds from sending the request to receiving the last of `events` events."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = h11.Connection(h11.CLIENT)
    started = time.perf_counter()
    request = h11.Request(
        method="GET",
        target=path,
        headers=[("host", "127.0.0.1"), ("accept", "text/event-stream")],
    )
    writer.write(conn.send(request) + conn.send(h11.EndOfMessage()))
    seen, tail = 0, b""
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                if not data:
                    raise RuntimeError("SSE stream closed early")
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Response) and event.status_code != 200:
                raise RuntimeError(f"SSE stream answered {event.status_code}")
            if isinstance(event, h11.Data):
                buf = tail + bytes(event.data)
                seen += buf.count(b"\n\n")
                tail = buf[-1:]
                if seen >= events:
                    return time.perf_counter() - started
            if isinstance(event, h11.EndOfMessage):
                raise RuntimeError(f"SSE stream ended after {seen} of {events} events")
    finally:
        writer.close()


def sse_time_to_last_event(port: int, path: str, events: int, streams: int) -> dict[str, Any]:
    """Sequential streams (fresh client connection each); median and best time to last event."""

    async def run() -> list[float]:
        await _one_stream(port, path, events)  # warm the proxy's upstream connection
        return [await asyncio.wait_for(_one_stream(port, path, events), 30) for _ in range(streams)]

    times = asyncio.run(run())
    return {
        "streams": streams,
        "events": events,
        "median_ms": round(statistics.median(times) * 1e3, 2),
        "best_ms": round(min(times) * 1e3, 2),
    }
