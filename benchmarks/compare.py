"""`python -m benchmarks.compare [--base REV]`: this checkout's mpp-proxy beside another commit's.

Both run on granian (1 worker, pinned to the server core) in front of one nginx upstream, from
the same virtualenv; the other commit is checked out into a temporary git worktree and put
first on its PYTHONPATH. Each scenario interleaves the two (A, B, A, B...) so drifts in machine
load hit both alike, keeps each side's best round, and reports the ratios:

    small GET at 64 and at 1 connection: req/s and server CPU per request
    256 KiB POST upload at 16 connections: MiB/s
    256 KiB paid uploads (test money, pre-signed) at 64 connections: req/s, and the peak
        resident memory the proxy gained during them (VmHWM, reset first), per connection

The base defaults to HEAD, so a change in the working tree is measured against its parent; in a
clean checkout pass --base HEAD~1. Results go to benchmarks/results/compare.json.

With --observe, the small GET at 64 connections runs on four sides instead: the base commit,
this checkout with every sink off (no metrics, no access log, no tracing, no subscriber),
this checkout as configured by default (metrics on), and this checkout with metrics and the
JSON access log on (its lines written to a file, the metrics in multiprocess mode as under
`mpp-proxy serve`). Results go to benchmarks/results/compare-observe.json.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
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
allow_test_payments = true

[methods.play]
kind = "test"

[services.{service}]
base_url = "http://127.0.0.1:{port}"
[services.{service}.routes]
"GET /small" = "free"
"POST /upload" = "free"
"POST /paid/upload" = {{ price = "0.01", pay_with = ["play"] }}
"""
EXTRA: list[str] = [a for a in os.environ.get("COMPARE_GRANIAN_ARGS", "").split() if a]
PAID_UPLOADS = 64  # connections: each holds one paid upload in flight
UPLOAD_CREDENTIALS = 12_000


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


# The sides of --observe: extra config and environment for this checkout's proxy.
METRICS_OFF = "[proxy.metrics]\nenabled = false\n"
OBSERVE_SIDES: dict[str, tuple[str, dict[str, str]]] = {
    "off": (METRICS_OFF + "[proxy.log]\naccess = false\n", {}),
    "default": ("", {}),
    "on": ('[proxy.log]\naccess = true\nformat = "json"\n', {"PROMETHEUS_MULTIPROC_DIR": ""}),
}


def start_upstream(work: Path, cores: Cores | None = None) -> Server:
    """The nginx upstream every side forwards to (pinned to the load cores when given)."""
    port = free_port()
    conf = nginx.upstream_conf(work, port, free_port())
    argv = ["nginx", "-p", str(work), "-c", str(conf)]
    upstream = Server(
        "upstream", cores.pin(argv, cores.load) if cores else argv, port, work, ready_path="/small"
    )
    upstream.start()
    return upstream


def start_proxy(
    name: str,
    tree: Path,
    work: Path,
    upstream: int,
    cores: Cores,
    config_text: str = CONFIG,
    wrapper: Sequence[str] = (),
    *,
    extra: str = "",
    env: dict[str, str] | None = None,
) -> Server:
    """mpp-proxy from `tree` on granian, with `config_text` ({service}, {port} filled in) and
    `extra` config tables; `wrapper` runs granian under another program (valgrind), given time
    to start."""
    config = work / f"{name}.toml"
    text = config_text.format(service=SERVICE, port=upstream)
    if extra:
        # The [proxy] table is first: its sub-tables go right after it.
        head, _, rest = text.partition("\n[methods.")
        text = head + "\n" + extra + "\n[methods." + rest
    config.write_text(text)
    port = free_port()
    argv = [
        *wrapper,
        str(BIN / "granian"),
        "--interface", "asgi",
        "--loop", "uvloop",
        "--http", "1",
        "--workers", "1",
        "--host", "127.0.0.1",
        "--port", str(port),
        "--log-level", "warning",
        *EXTRA,
        "mpp_proxy:app",
    ]  # fmt: skip
    environ = {"MPP_PROXY_CONFIG": str(config), "PYTHONPATH": str(tree)}
    for key, value in (env or {}).items():
        if key == "PROMETHEUS_MULTIPROC_DIR" and not value:
            value = str(work / f"{name}-metrics")
            Path(value).mkdir(exist_ok=True)
        environ[key] = value
    server = Server(
        name, cores.pin(argv, cores.server), port, work, env=environ, ready_path=f"/{SERVICE}/small"
    )
    server.start(timeout=300 if wrapper else 30)
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
    pairs: tuple[tuple[str, str], ...] = (("current", "base"),),
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
    for key, ref in pairs:
        suffix = "" if (key, ref) == ("current", "base") else f"_{key}_vs_{ref}"
        out["rps_ratio" + suffix] = round(best[key]["rps"] / max(1.0, best[ref]["rps"]), 3)
        out["cpu_ratio" + suffix] = round(cpu[key] / max(0.1, cpu[ref]), 3)
        print(
            f"  => {path} c={conns}: {key}/{ref} {out['rps_ratio' + suffix]:.3f}x req/s, "
            f"{out['cpu_ratio' + suffix]:.3f}x server CPU per request"
        )
    return out


def paid_upload_script(path: Path, credentials: list[str], size: int) -> Path:
    """wrk lua: POST `size` bytes per request, each with its own credential (then the last)."""
    creds = path.with_suffix(".credentials")
    creds.write_text("\n".join(credentials) + "\n")
    path.write_text(
        f"""
local creds = {{}}
for line in io.lines("{creds}") do creds[#creds + 1] = line end
local body = string.rep("a", {size})
local i = 0
request = function()
  i = i + 1
  if i > #creds then i = #creds end
  return wrk.format("POST", nil, {{["Authorization"] = creds[i],
    ["Content-Type"] = "application/octet-stream"}}, body)
end
"""
    )
    return path


def credentials(server: Server, count: int) -> list[str]:
    """`count` test-money credentials, each for its own 402 of POST /paid/upload."""
    import httpx

    from mpp_proxy.client.testmoney import pay_challenge

    url = f"http://127.0.0.1:{server.port}/{SERVICE}/paid/upload"
    out = []
    with httpx.Client() as client:
        for _ in range(count):
            answer = client.post(url)
            out.append(pay_challenge(answer.headers.get_list("www-authenticate")))
    return out


def peak_gain(server: Server, run: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], int]:
    """Run `run` and return its row and the peak RSS its server gained meanwhile (bytes)."""
    pids = server.tree()
    for pid in pids:  # resets VmHWM to the current RSS (Linux, root)
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = sum(_status_kib(pid, "VmRSS") for pid in pids)
    row = run()
    peak = sum(_status_kib(pid, "VmHWM") for pid in pids)
    return row, max(0, peak - before) * 1024


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def paid_upload_scenario(
    sides: dict[str, Server], work: Path, args: argparse.Namespace, cores: Cores
) -> dict[str, Any]:
    out: dict[str, Any] = {"connections": PAID_UPLOADS, "bytes": nginx.UPLOAD_BYTES}
    for key, server in sides.items():
        script = paid_upload_script(
            work / f"paid-{key}.lua", credentials(server, UPLOAD_CREDENTIALS), nginx.UPLOAD_BYTES
        )
        url = f"http://127.0.0.1:{server.port}/{SERVICE}/paid/upload"
        pin = cores.pin([], cores.load)
        load = functools.partial(wrk, url, PAID_UPLOADS, 3, pin, script)
        row, gained = peak_gain(server, lambda: load().as_dict())  # noqa: B023 (called here)
        out[key] = {
            "rps": row["rps"],
            "non_2xx": row.get("non_2xx", 0),
            "peak_rss_gain_bytes": gained,
            "peak_rss_gain_per_upload_kib": round(gained / PAID_UPLOADS / 1024, 1),
        }
        print(f"  paid 256 KiB uploads c={PAID_UPLOADS} {key:>8}: {out[key]}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="HEAD", help="the commit to compare with (HEAD)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument(
        "--observe", action="store_true", help="metrics and access log on vs off (see above)"
    )
    args = parser.parse_args(argv)
    ensure_debian_packages({"wrk": "wrk", "nginx": "nginx"})
    cores = Cores.detect()
    with (
        tempfile.TemporaryDirectory(prefix="mpp-proxy-compare-") as tmp,
        worktree(args.base) as (base_tree, short),
    ):
        work = Path(tmp)
        upstream = start_upstream(work, cores)
        up_port = upstream.port
        sides: dict[str, Server] = {}
        try:
            if args.observe:
                sides["base"] = start_proxy("base", base_tree, work, up_port, cores)
                for name, (extra, env) in OBSERVE_SIDES.items():
                    sides[name] = start_proxy(
                        name, ROOT, work, up_port, cores, extra=extra, env=env
                    )
                pairs = (("off", "base"), ("default", "base"), ("on", "off"))
                report = {
                    "base": short,
                    "small_get_64": scenario(sides, "/small", 64, args, cores, None, pairs),
                }
                return _write(report, "compare-observe.json")
            sides["current"] = start_proxy("current", ROOT, work, up_port, cores)
            sides["base"] = start_proxy("base", base_tree, work, up_port, cores)
            upload = post_script(work / "upload.lua", nginx.UPLOAD_BYTES)
            report = {
                "base": short,
                "small_get_64": scenario(sides, "/small", 64, args, cores),
                "small_get_1": scenario(sides, "/small", 1, args, cores),
                "upload_256k_16": scenario(sides, "/upload", 16, args, cores, upload),
                "paid_upload_256k": paid_upload_scenario(sides, work, args, cores),
            }
        finally:
            for server in (*sides.values(), upstream):
                with contextlib.suppress(Exception):
                    server.stop()
    return _write(report, "compare.json")


def _write(report: dict[str, Any], name: str) -> int:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / name).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
