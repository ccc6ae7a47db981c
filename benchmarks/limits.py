"""`python -m benchmarks.limits`: what limits cost, measured side by side in one run.

    in process   the admit stage with one memory:// rate limit (never hit) against the same
                 route without it: microseconds per request (under uvloop, 1,024 client keys)
    64 conns     small GET through two granian proxies from this checkout, limit on (never
                 hit) and off, interleaved rounds: req/s and server CPU per request, as ratios
    1 conn       the same on a shared store, Redis and SQLite: the latency and CPU a limited
                 request adds when its counter is a round trip to the store

The machine is shared: the figures to read are the ratios and the CPU per request, not the
absolute req/s. Results go to benchmarks/results/limits.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvloop

from benchmarks.compare import CONFIG, ROOT, scenario, start_proxy, start_upstream
from benchmarks.procs import Cores, Server, ensure_debian_packages

RESULTS = ROOT / "benchmarks" / "results"
# Doubled braces: compare's config template is filled in with str.format.
NEVER_HIT = '{{ limits = [{{ rate = "1000000000/second", key = "ip" }}] }}'
KEYS = 1024


def limited_config(state: str = "memory://", limit: bool = True) -> str:
    """compare's config (its {service} and {port} left to fill) on `state`, with the small
    GET route limited or not."""
    text = CONFIG.replace('state = "memory://"', f'state = "{state}"')
    if limit:
        text = text.replace('"GET /small" = "free"', f'"GET /small" = {NEVER_HIT}')
    return text


# ------------------------------------------------------------------------------ in process


def in_process(n: int, rounds: int) -> dict[str, Any]:
    """The admit stage on its own: `admit(ex)` and `ex.end()` per request, limited route against
    the same route unlimited (where the chain skips admit; measured with the same loop)."""
    from mpp_proxy.config import load_config
    from mpp_proxy.core import Proxy
    from mpp_proxy.core.admit import admit
    from mpp_proxy.core.exchange import Exchange

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "proxy.toml"
        path.write_text(limited_config().format(service="bench", port=9))
        app = Proxy(load_config(path, {}))
    plan = app._router.match("GET", "/bench/small").plan  # type: ignore[union-attr]
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
                await admit(ex)
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
        "admit_and_end_us": round(with_limit, 3),
        "loop_without_admit_us": round(without, 3),
        "limiter_cost_us": round(with_limit - without, 3),
    }
    print(f"  in process: {out}")
    return out


# ------------------------------------------------------------------------------ served


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
            f"{tag}-off", ROOT, work, up, cores, limited_config(state, limit=False)
        )
        yield sides
    finally:
        for server in sides.values():
            with contextlib.suppress(Exception):
                server.stop()


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
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--requests", type=int, default=200_000, help="in-process iterations")
    parser.add_argument("--in-process-only", action="store_true")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"in_process": in_process(args.requests, args.rounds)}
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
            with side_by_side(work, up, cores, "memory://", "memory") as sides:
                report["small_get_64"] = scenario(sides, "/small", 64, args, cores)
            redis = f"redis://127.0.0.1:{redis_port}/0"
            report["redis_1"] = store_scenario(work, up, cores, redis, "redis", args)
            sqlite = f"sqlite:///{work / 'state.db'}"
            report["sqlite_1"] = store_scenario(work, up, cores, sqlite, "sqlite", args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "limits.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
