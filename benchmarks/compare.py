"""`python -m benchmarks.compare [--base REV]`: this checkout's mpp-proxy beside another commit's.

Both run on granian (1 worker, pinned to the server core) in front of one nginx upstream, from
the same virtualenv; the other commit is checked out into a temporary git worktree and put
first on its PYTHONPATH. Each scenario interleaves the two (A, B, A, B...) so drifts in machine
load hit both alike, keeps each side's best round, and reports the ratios:

    small GET at 64 and at 1 connection: req/s and server CPU per request
    256 KiB POST upload at 16 connections: MiB/s

The base defaults to HEAD, so a change in the working tree is measured against its parent; in a
clean checkout pass --base HEAD~1. Results go to benchmarks/results/compare.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks import nginx
from benchmarks.load import UsageMeter, post_script, wrk
from benchmarks.procs import Cores, Server, ensure_debian_packages, free_port

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BIN = Path(sys.executable).parent
SERVICE = "bench"

CONFIG = """[proxy]
secret_key = "bench-only-secret-key-0123456789abcdef"
realm = "bench.local"
state = "memory://"

[services.{service}]
base_url = "http://127.0.0.1:{port}"
[services.{service}.routes]
"GET /small" = "free"
"POST /upload" = "free"
"""


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[tuple[Path, str]]:
    """`rev` checked out (detached) in a temporary worktree: (its path, its short hash)."""
    short = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", rev],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="mpp-proxy-base-") as tmp:
        path = Path(tmp) / "tree"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev],
            check=True,
            capture_output=True,
        )
        try:
            yield path, short
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
                capture_output=True,
            )


def start_proxy(name: str, tree: Path, work: Path, upstream: int, cores: Cores) -> Server:
    config = work / f"{name}.toml"
    config.write_text(CONFIG.format(service=SERVICE, port=upstream))
    port = free_port()
    argv = [
        str(BIN / "granian"),
        "--interface", "asgi",
        "--loop", "uvloop",
        "--http", "1",
        "--workers", "1",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--log-level", "warning",
        "mpp_proxy:app",
    ]  # fmt: skip
    server = Server(
        name,
        cores.pin(argv, cores.server),
        port,
        work,
        env={"MPP_PROXY_CONFIG": str(config), "PYTHONPATH": str(tree)},
        ready_path=f"/{SERVICE}/small",
    )
    server.start()
    return server


def measure(
    server: Server, path: str, conns: int, seconds: float, cores: Cores, script: Path | None
) -> dict[str, Any]:
    url = f"http://127.0.0.1:{server.port}/{SERVICE}{path}"
    pin = cores.pin([], cores.load)
    wrk(url, conns, 1, pin, script)  # warm-up
    meter = UsageMeter({"server": server.tree()})
    meter.start()
    result = wrk(url, conns, seconds, pin, script)
    usage = meter.stop()
    row = result.as_dict()
    row["server_cpu_us_per_request"] = round(
        1e6 * usage.cpu_s["server"] / max(1, result.requests), 1
    )
    row["steal_pct"] = usage.as_dict().get("steal_pct", 0.0)
    return row


def scenario(
    sides: dict[str, Server],
    path: str,
    conns: int,
    args: argparse.Namespace,
    cores: Cores,
    script: Path | None = None,
) -> dict[str, Any]:
    rounds: dict[str, list[dict[str, Any]]] = {k: [] for k in sides}
    for n in range(args.rounds):
        for key, server in sides.items():
            row = measure(server, path, conns, args.seconds, cores, script)
            rounds[key].append(row)
            print(
                f"  {path} c={conns} [{n + 1}/{args.rounds}] {key:>8}: {row['rps']:>9.0f} rps "
                f"{row['mib_per_s']:>7.1f} MiB/s server {row['server_cpu_us_per_request']} us/req"
            )
    best = {k: max(rows, key=lambda r: r["rps"]) for k, rows in rounds.items()}
    cpu = {k: min(r["server_cpu_us_per_request"] for r in rows) for k, rows in rounds.items()}
    out: dict[str, Any] = {
        "path": path,
        "connections": conns,
        "rounds": args.rounds,
        "best_rps": {k: b["rps"] for k, b in best.items()},
        "best_mib_per_s": {k: b["mib_per_s"] for k, b in best.items()},
        "min_server_cpu_us_per_request": cpu,
        "all_rps": {k: [r["rps"] for r in rows] for k, rows in rounds.items()},
    }
    out["rps_ratio"] = round(best["current"]["rps"] / max(1.0, best["base"]["rps"]), 3)
    out["cpu_ratio"] = round(cpu["current"] / max(0.1, cpu["base"]), 3)
    print(
        f"  => {path} c={conns}: current/base {out['rps_ratio']:.3f}x req/s, "
        f"{out['cpu_ratio']:.3f}x server CPU per request"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD", help="the commit to compare with (HEAD)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args(argv)
    ensure_debian_packages({"wrk": "wrk", "nginx": "nginx"})
    cores = Cores.detect()
    with (
        tempfile.TemporaryDirectory(prefix="mpp-proxy-compare-") as tmp,
        worktree(args.base) as (base_tree, short),
    ):
        work = Path(tmp)
        up_port = free_port()
        conf = nginx.upstream_conf(work, up_port, free_port())
        upstream = Server(
            "upstream",
            cores.pin(["nginx", "-p", str(work), "-c", str(conf)], cores.load),
            up_port,
            work,
            ready_path="/small",
        )
        upstream.start()
        sides: dict[str, Server] = {}
        try:
            sides["current"] = start_proxy("current", ROOT, work, up_port, cores)
            sides["base"] = start_proxy("base", base_tree, work, up_port, cores)
            upload = post_script(work / "upload.lua", nginx.UPLOAD_BYTES)
            report = {
                "base": short,
                "small_get_64": scenario(sides, "/small", 64, args, cores),
                "small_get_1": scenario(sides, "/small", 1, args, cores),
                "upload_256k_16": scenario(sides, "/upload", 16, args, cores, upload),
            }
        finally:
            for server in (*sides.values(), upstream):
                with contextlib.suppress(Exception):
                    server.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "compare.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
