"""`python -m benchmarks.observe_cost [--base REV]`: what metrics and the access log cost.

The ASGI app is driven in-process (no HTTP server, no load generator sharing the cores) against
one nginx upstream over loopback, 64 requests in flight, and the process's own CPU time is
divided by the requests served: on a shared, noisy machine this moves far less than a wrk run,
because nothing else's work lands in the measured process. Sides, each its own process, run
interleaved round by round; the best (lowest) round of each counts:

    base     another commit's mpp-proxy (default: the commit this branch started from)
    off      this checkout, every sink off (no metrics, no access log, no tracing, no subscriber)
    default  this checkout as configured by default (metrics on)
    on       this checkout with metrics (multiprocess mode, as under `mpp-proxy serve`) and the
             JSON access log on, written to a file

Reports CPU microseconds per request per side and the ratios on/off, off/base, default/base;
results go to benchmarks/results/observe-cost.json. With --callgrind each side runs once under
valgrind's callgrind and reports instructions per request instead: exact and repeatable
whatever else the machine runs (~2 minutes a side; results in observe-cost-callgrind.json).
With --served the sides off, default and on are served by granian instead, each under callgrind
(benchmarks.served): the whole server's instructions per request at 64 connections, granian's
own work included, which is what "server CPU per request" means (observe-cost-served.json).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.compare import METRICS_OFF, ROOT, start_upstream, worktree
from benchmarks.procs import ensure_debian_packages

RESULTS = ROOT / "benchmarks" / "results"
# One side's process: a file of its own, so the other commit's mpp_proxy is the one it imports.
SIDE = Path(__file__).with_name("observe_side.py")
CONFIG = """[proxy]
secret_key = "bench-only-secret-key-0123456789abcdef"
state = "memory://"
{extra}

[services.bench]
base_url = "http://127.0.0.1:{port}"
[services.bench.routes]
"GET /small" = "free"
"""
SIDES = {
    "off": METRICS_OFF + "[proxy.log]\naccess = false\n",
    "default": "",
    "on": '[proxy.log]\naccess = true\nformat = "json"\n',
}


def run_side(
    tree: Path, config: Path, work: Path, args: argparse.Namespace, env: dict[str, str]
) -> float:
    out = work / f"{config.stem}.stdout"
    argv = [sys.executable, str(SIDE), str(config), str(args.requests), str(args.concurrency)]
    if args.callgrind:
        argv = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={work}/callgrind.out.%p",
            *argv,
        ]
        env = {**env, "OBSERVE_COST_CALLGRIND": "1"}
    with out.open("wb") as stdout:
        done = subprocess.run(
            argv,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(tree), **env},
            cwd=work,
            check=False,
        )  # fmt: skip
    for line in done.stderr.splitlines():
        if line.startswith("RESULT "):
            return float(line.split()[1])
    raise RuntimeError(f"side {config.stem} failed:\n{done.stderr[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="2f0c4d3", help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--callgrind", action="store_true", help="count instructions instead")
    parser.add_argument("--served", action="store_true", help="whole server under callgrind")
    parser.add_argument("--seconds", type=float, default=30.0, help="--served: long run - short")
    args = parser.parse_args(argv)
    if args.served:
        return served(args.seconds)
    if args.callgrind:
        args.rounds = 1  # instruction counts repeat: one round is the answer
        args.requests = min(args.requests, 1280)
    ensure_debian_packages(
        {"nginx": "nginx", **({"valgrind": "valgrind"} if args.callgrind else {})}
    )
    with (
        tempfile.TemporaryDirectory(prefix="mpp-proxy-observe-cost-") as tmp,
        worktree(args.base) as (base_tree, short),
    ):
        work = Path(tmp)
        upstream = start_upstream(work)
        up_port = upstream.port
        try:
            configs = {"base": (base_tree, "", {})}
            metrics_dir = work / "metrics"
            metrics_dir.mkdir()
            for name, extra in SIDES.items():
                env = {"PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)} if name == "on" else {}
                configs[name] = (ROOT, extra, env)
            paths = {}
            for name, (_, extra, _) in configs.items():
                paths[name] = work / f"{name}.toml"
                paths[name].write_text(CONFIG.format(extra=extra, port=up_port))
            rounds: dict[str, list[float]] = {name: [] for name in configs}

            def side(name: str) -> float:
                tree, _, env = configs[name]
                return run_side(tree, paths[name], work, args, env)

            for n in range(args.rounds):
                if args.callgrind:  # counts do not depend on what else runs: all at once
                    with ThreadPoolExecutor(len(configs)) as pool:
                        got = dict(zip(configs, pool.map(side, configs), strict=True))
                else:
                    got = {name: side(name) for name in configs}
                for name, us in got.items():
                    rounds[name].append(us)
                    unit = "k instructions" if args.callgrind else "us CPU"
                    shown = us / 1000 if args.callgrind else us
                    print(f"  [{n + 1}/{args.rounds}] {name:>8}: {shown:8.2f} {unit} per request")
        finally:
            upstream.stop()
    best = {name: min(values) for name, values in rounds.items()}
    report = {
        "base": short,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "best_cpu_us_per_request": best,
        "all_cpu_us_per_request": rounds,
        "on_vs_off": round(best["on"] / best["off"], 3),
        "off_vs_base": round(best["off"] / best["base"], 3),
        "default_vs_base": round(best["default"] / best["base"], 3),
    }
    for key in ("on_vs_off", "off_vs_base", "default_vs_base"):
        print(f"  => {key}: {report[key]:.3f}x CPU per request")
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.callgrind:
        report["unit"] = "instructions per request (callgrind)"
    name = "observe-cost-callgrind.json" if args.callgrind else "observe-cost.json"
    (RESULTS / name).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def served(seconds: float) -> int:
    """The sides off, default and on served by granian under callgrind, one after another."""
    from benchmarks.compare import CONFIG, OBSERVE_SIDES
    from benchmarks.procs import Cores
    from benchmarks.served import CONNECTIONS, Side, served_instructions

    ensure_debian_packages({"nginx": "nginx", "valgrind": "valgrind", "wrk": "wrk"})
    cores = Cores.detect()
    report: dict[str, object] = {"connections": CONNECTIONS, "seconds": seconds}
    per_request: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="mpp-proxy-observe-served-") as tmp:
        work = Path(tmp)
        upstream = start_upstream(work, cores)
        try:
            for name, (extra, env) in OBSERVE_SIDES.items():
                side = Side(CONFIG, extra, env)
                per_request[name], report[f"{name}_requests"] = served_instructions(
                    work, upstream.port, cores, side, name, seconds
                )
                print(f"  {name:>8}: {per_request[name] / 1000:8.2f} k instructions per request")
        finally:
            upstream.stop()
    report["instructions_per_request"] = per_request
    for key, name in (("on_vs_off", "on"), ("default_vs_off", "default")):
        report[key] = round(per_request[name] / per_request["off"], 4)
        print(f"  => {key}: {report[key]:.3f}x server instructions per request")
    report["unit"] = "instructions per request of the whole server (callgrind)"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "observe-cost-served.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
