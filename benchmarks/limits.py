"""`python -m benchmarks.limits`: what limits cost, measured side by side in one run.

    in process   the admit stage with one memory:// rate limit (never hit) against the same
                 route without it: CPU microseconds per request (uvloop, 1,024 client keys)
    instructions a whole request through the ASGI app in process (a loopback upstream), limit
                 on and off, counted by valgrind's callgrind: deterministic, whatever the
                 neighbours do (granian's own work is not in it: see whole server)
    whole server the same request through granian at 64 connections, limit on and off, its
                 instructions per request (callgrind, granian's Rust and our Python)
    64 conns     small GET through two granian proxies from this checkout, limit on (never
                 hit) and off, in back-to-back pairs of alternating order: the median of the
                 pairs' req/s ratios, and of their server CPU per request
    1 conn       the same on a shared store, Redis and SQLite: the latency and CPU a limited
                 request adds when its counter is a round trip to the store

The machine is shared: the figures to read are the ratios, the CPU per request and the
instruction counts, not the absolute req/s. Results go to benchmarks/results/limits.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvloop

from benchmarks.compare import CONFIG, ROOT, start_proxy, start_upstream
from benchmarks.observe_side import SCOPE
from benchmarks.procs import Cores, Server, ensure_debian_packages

RESULTS = ROOT / "benchmarks" / "results"
# Never hit at any load this machine can make (one request a microsecond refills the bucket),
# as operators write "unlimited but at most this many at once". Doubled braces: compare's
# config template is filled in with str.format.
NEVER_HIT = '{{ limits = [{{ rate = "1000000/second", burst = 1000, key = "ip" }}] }}'
# The same with the burst left to the whole count (a million): fields formatted every time.
NEVER_HIT_HUGE_BURST = '{{ limits = [{{ rate = "1000000/second", key = "ip" }}] }}'
KEYS = 1024


def limited_config(state: str = "memory://", limit: str | None = NEVER_HIT) -> str:
    """compare's config (its {service} and {port} left to fill) on `state`, with the small
    GET route limited by `limit` (or not, None)."""
    text = CONFIG.replace('state = "memory://"', f'state = "{state}"')
    if limit is not None:
        text = text.replace('"GET /small" = "free"', f'"GET /small" = {limit}')
    return text


def _proxy(text: str, port: int = 9) -> Any:
    from mpp_proxy.config import load_config
    from mpp_proxy.core import Proxy

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "proxy.toml"
        path.write_text(text.format(service="bench", port=port))
        return Proxy(load_config(path, {}))


# ------------------------------------------------------------------------------ in process


def in_process(n: int, rounds: int, limit: str = NEVER_HIT) -> dict[str, Any]:
    """The admit stage on its own, called as the chain calls it, limited route against the
    same loop without it (where the chain skips the stage)."""
    from mpp_proxy.core.admit import admit, admit_now
    from mpp_proxy.core.exchange import Exchange

    app = _proxy(limited_config(limit=limit))
    plan = app._router.match("GET", "/bench/small").plan
    assert plan.limits is not None
    clients = [f"10.0.{i >> 8}.{i & 255}" for i in range(KEYS)]
    scope = {"headers": [(b"host", b"bench")], "client": ("10.0.0.1", 1)}

    async def run(limited: bool) -> float:
        # CPU time, not wall time: on a shared machine the neighbours' load stays out of it.
        start = time.process_time()
        for i in range(n):
            ex = Exchange(scope, None, None, plan, "GET", "/bench/small", "/small")  # type: ignore[arg-type]
            ex.client = clients[i & (KEYS - 1)]
            if limited:
                quick = plan.limits.quick
                await admit(ex) if quick is None else admit_now(ex, quick)
                if ex.admission is not None or ex.conn is not None:
                    ex.end()
        return (time.process_time() - start) / n * 1e6

    # Interleaved rounds, the best of each side.
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(rounds):
        for limited in (True, False):
            times[limited].append(uvloop.run(run(limited)))
    with_limit, without = min(times[True]), min(times[False])
    out = {
        "requests": n,
        "keys": KEYS,
        "admit_us": round(with_limit, 3),
        "loop_without_admit_us": round(without, 3),
        "limiter_cost_us": round(with_limit - without, 3),
    }
    print(f"  in process: {out}")
    return out


_RESPONSE = (
    b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{"ok":true}'
)


class _Upstream(asyncio.Protocol):
    """A loopback upstream answering every request at once (in this process)."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.pending = b""

    def data_received(self, data: bytes) -> None:
        self.pending += data
        while b"\r\n\r\n" in self.pending:
            _, self.pending = self.pending.split(b"\r\n\r\n", 1)
            self.transport.write(_RESPONSE)


async def _requests(limit: str | None, n: int) -> None:
    """`n` GETs through the ASGI app, as a server would call it, to an in-process upstream."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Upstream, "127.0.0.1", 0)
    app = _proxy(limited_config(limit=limit), server.sockets[0].getsockname()[1])
    await app.startup()
    scope = dict(SCOPE)  # the same GET the observability benchmark sends
    stay = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await stay.wait()  # the client never leaves (the disconnect watch waits on this)
        raise AssertionError

    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    for _ in range(n):
        await app(scope, receive, send)
    assert set(statuses) == {200}, set(statuses)
    await app.shutdown()
    server.close()


def instructions(limit: str | None, small: int = 1000, large: int = 4000) -> int:
    """Instructions per request (callgrind), from two runs so that start-up cancels out."""

    def count(n: int) -> int:
        argv = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
        argv += [sys.executable, "-m", "benchmarks.limits", "--chain", limit or "off", str(n)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, check=True)
        found = re.search(r"refs:\s+([\d,]+)", done.stderr)
        assert found, done.stderr[-2000:]
        return int(found.group(1).replace(",", ""))

    return (count(large) - count(small)) // (large - small)


def chain_instructions() -> dict[str, Any]:
    off = instructions(None)
    on = instructions(NEVER_HIT)
    huge = instructions(NEVER_HIT_HUGE_BURST)
    out = {
        "off": off,
        "limit": on,
        "limit_huge_burst": huge,
        "ratio": round(on / off, 4),
        "ratio_huge_burst": round(huge / off, 4),
    }
    print(f"  instructions per request (callgrind): {out}")
    return out


# ------------------------------------------------------------------------------ served


def served(work: Path, up: int, cores: Cores, seconds: float) -> dict[str, Any]:
    """Instructions per request of the whole server (granian's Rust and our Python) at 64
    connections, limit on and off (benchmarks.served)."""
    from benchmarks.served import CONNECTIONS, Side, served_instructions

    out: dict[str, Any] = {"connections": CONNECTIONS}
    for side, limit in (("off", None), ("limit", NEVER_HIT)):
        config = Side(limited_config(limit=limit))
        out[side], out[f"{side}_requests"] = served_instructions(
            work, up, cores, config, side, seconds
        )
    out["ratio"] = round(out["limit"] / out["off"], 4)
    print(f"  whole server, instructions per request (callgrind): {out}")
    return out


@contextlib.contextmanager
def upstream(work: Path, cores: Cores) -> Iterator[int]:
    server = start_upstream(work, cores)
    try:
        yield server.port
    finally:
        server.stop()


@contextlib.contextmanager
def side_by_side(
    work: Path, up: int, cores: Cores, state: str, tag: str
) -> Iterator[dict[str, Server]]:
    """Two proxies from this checkout: "base" without the limit, "current" with it."""
    sides: dict[str, Server] = {}
    try:
        sides["current"] = start_proxy(f"{tag}-on", ROOT, work, up, cores, limited_config(state))
        sides["base"] = start_proxy(
            f"{tag}-off", ROOT, work, up, cores, limited_config(state, limit=None)
        )
        yield sides
    finally:
        for server in sides.values():
            with contextlib.suppress(Exception):
                server.stop()


def paired(
    sides: dict[str, Server], path: str, conns: int, args: argparse.Namespace, cores: Cores
) -> dict[str, Any]:
    """Limit on ("current") and off ("base") in back-to-back pairs, the order alternating
    (on-off, off-on, ...) so a drift in the neighbours' load hits both sides alike; each pair
    gives one ratio. The median of those ratios is the figure; each side's best round too."""
    from benchmarks.compare import measure

    rows: dict[str, list[dict[str, Any]]] = {k: [] for k in sides}
    ratios: list[float] = []
    cpu_ratios: list[float] = []
    for n in range(args.pairs):
        order = ["current", "base"] if n % 2 == 0 else ["base", "current"]
        pair: dict[str, dict[str, Any]] = {}
        for key in order:
            pair[key] = measure(sides[key], path, conns, args.seconds, cores, None)
            rows[key].append(pair[key])
        ratios.append(pair["current"]["rps"] / max(1.0, pair["base"]["rps"]))
        cpu = pair["current"]["server_cpu_us_per_request"]
        cpu_ratios.append(cpu / max(0.1, pair["base"]["server_cpu_us_per_request"]))
        print(
            f"  {path} c={conns} [{n + 1}/{args.pairs}] on {pair['current']['rps']:.0f} rps, "
            f"off {pair['base']['rps']:.0f} rps: {ratios[-1]:.3f}x (CPU {cpu_ratios[-1]:.3f}x)"
        )
    best = {k: max(r["rps"] for r in v) for k, v in rows.items()}
    out: dict[str, Any] = {
        "path": path,
        "connections": conns,
        "pairs": args.pairs,
        "seconds": args.seconds,
        "median_rps_ratio": round(statistics.median(ratios), 3),
        "median_cpu_ratio": round(statistics.median(cpu_ratios), 3),
        "best_rps": best,
        "best_rps_ratio": round(best["current"] / max(1.0, best["base"]), 3),
        "rps_ratios": [round(r, 3) for r in ratios],
        "all_rps": {k: [r["rps"] for r in v] for k, v in rows.items()},
    }
    print(
        f"  => {path} c={conns}: limit on/off {out['median_rps_ratio']:.3f}x req/s (median of "
        f"{args.pairs} pairs), {out['median_cpu_ratio']:.3f}x server CPU per request"
    )
    return out


def store_scenario(
    work: Path, up: int, cores: Cores, state: str, tag: str, args: argparse.Namespace
) -> dict[str, Any]:
    from benchmarks.compare import measure

    with side_by_side(work, up, cores, state, tag) as sides:
        p50: dict[str, list[float]] = {k: [] for k in sides}
        cpu: dict[str, list[float]] = {k: [] for k in sides}
        for n in range(args.rounds):
            for key, server in sides.items():
                row = measure(server, "/small", 1, args.seconds, cores, None)
                p50[key].append(row["p50_ms"])
                cpu[key].append(row["server_cpu_us_per_request"])
                print(
                    f"  {tag} c=1 [{n + 1}/{args.rounds}] {key:>8}: p50 {row['p50_ms']} ms, "
                    f"server {row['server_cpu_us_per_request']} us/req"
                )
    out = {
        "state": tag,
        "median_p50_ms": {k: statistics.median(v) for k, v in p50.items()},
        "min_server_cpu_us_per_request": {k: min(v) for k, v in cpu.items()},
    }
    out["added_p50_us"] = round(
        1000 * (out["median_p50_ms"]["current"] - out["median_p50_ms"]["base"]), 1
    )
    cpus = out["min_server_cpu_us_per_request"]
    out["added_cpu_us_per_request"] = round(cpus["current"] - cpus["base"], 1)
    print(f"  => {tag} at 1 connection: {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=4, help="rounds at 1 connection")
    parser.add_argument("--pairs", type=int, default=12, help="on/off pairs at 64 connections")
    parser.add_argument("--requests", type=int, default=200_000, help="in-process iterations")
    parser.add_argument("--in-process-only", action="store_true")
    parser.add_argument("--chain", nargs=2, metavar=("LIMIT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.chain:  # one callgrind run of `instructions`
        limit = None if args.chain[0] == "off" else args.chain[0]
        uvloop.run(_requests(limit, int(args.chain[1])))
        return 0
    report: dict[str, Any] = {
        "in_process": in_process(args.requests, args.rounds),
        "in_process_huge_burst": in_process(args.requests, args.rounds, NEVER_HIT_HUGE_BURST),
    }
    if shutil.which("valgrind"):
        report["instructions"] = chain_instructions()
    if not args.in_process_only:
        ensure_debian_packages({"wrk": "wrk", "nginx": "nginx", "redis-server": "redis-server"})
        sys.path.insert(0, str(ROOT))
        from tests.support.redis_server import redis_server

        cores = Cores.detect()
        with (
            tempfile.TemporaryDirectory(prefix="mpp-proxy-limits-") as tmp,
            upstream(Path(tmp), cores) as up,
            redis_server() as redis_port,
        ):
            work = Path(tmp)
            if shutil.which("valgrind"):
                report["served_instructions"] = served(work, up, cores, 30)
            with side_by_side(work, up, cores, "memory://", "memory") as sides:
                report["small_get_64"] = paired(sides, "/small", 64, args, cores)
            redis = f"redis://127.0.0.1:{redis_port}/0"
            report["redis_1"] = store_scenario(work, up, cores, redis, "redis", args)
            sqlite = f"sqlite:///{work / 'state.db'}"
            report["sqlite_1"] = store_scenario(work, up, cores, sqlite, "sqlite", args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "limits.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
