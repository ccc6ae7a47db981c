"""`mpp-proxy serve --workers 2` against `--workers 1`: server CPU per request, side by side.

On a machine with few cores wrk and the upstream share them with the workers, so throughput
cannot show the scaling; the CPU the server spends per request can. Both proxies run the same
config on the default store (SQLite: memory:// is refused with several workers), each in its
own working directory, let free on every CPU (as an operator runs it), and take turns for
small GETs at 64 connections. The round with the least CPU per request counts for each.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from benchmarks.procs import Server, free_port

if TYPE_CHECKING:
    from benchmarks.run import Bench, Target

WORKERS = (1, 2)
CONNECTIONS = 64


def _start_serve(bench: Bench, workers: int) -> Target:
    from benchmarks.run import BIN, ROOT, SERVICE, Target, mpp_config

    assert bench.upstream is not None
    home = bench.work / f"mpp-workers-{workers}"
    home.mkdir(exist_ok=True)
    config = mpp_config(home / "proxy.toml", bench.upstream.port, paid=False, state=None)
    port = free_port()
    argv = [str(BIN / "mpp-proxy"), "serve", "--config", str(config), "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--workers", str(workers), "--drain-seconds", "0"]
    server = Server(
        f"mpp-proxy-workers-{workers}",
        bench.cores.pin(argv, bench.cores.every),
        port,
        bench.work,
        env={"PYTHONPATH": str(ROOT)},
        ready_path=f"/{SERVICE}/small",
        cwd=home,
    )
    bench.start(server)
    return Target("mpp", port, [server])


@contextlib.contextmanager
def serving(bench: Bench) -> Iterator[dict[int, Target]]:
    targets: dict[int, Target] = {}
    try:
        for workers in WORKERS:
            targets[workers] = _start_serve(bench, workers)
        yield targets
    finally:
        for target in targets.values():
            for server in target.servers:
                bench.stop(server)


def run_workers(bench: Bench, rounds: int | None = None) -> dict[str, Any]:
    from benchmarks.run import measure

    n = rounds or bench.plan.rounds
    rows: dict[int, list[dict[str, Any]]] = {w: [] for w in WORKERS}
    with serving(bench) as targets:
        for round_no in range(n):
            # Alternate who goes first: a drift in the machine's load falls on both alike.
            for workers in WORKERS if round_no % 2 == 0 else WORKERS[::-1]:
                row = measure(bench, targets[workers], "/small", CONNECTIONS, bench.plan.seconds)
                rows[workers].append(row)
                print(
                    f"  workers [{round_no + 1}/{n}] --workers {workers}: {row['rps']:.0f} rps, "
                    f"server {row['server_cpu_us_per_request']} us/request, "
                    f"others {row['other_cpu_s']:.1f} cpu-s"
                )
    best = {
        w: min(r, key=lambda row: float(row["server_cpu_us_per_request"])) for w, r in rows.items()
    }
    one, two = (best[w]["server_cpu_us_per_request"] for w in WORKERS)
    scenario = {
        "connections": CONNECTIONS,
        "seconds": bench.plan.seconds,
        "rounds": n,
        "selected_by": "least server_cpu_us_per_request",
        "targets": {
            f"workers_{w}": {
                **best[w],
                "all_rounds": [r["server_cpu_us_per_request"] for r in rows[w]],
            }
            for w in WORKERS
        },
        "cpu_per_request_2_over_1": round(two / one, 3) if one else None,
    }
    bench.results["scenarios"]["workers_cpu"] = scenario
    return scenario
