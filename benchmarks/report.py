"""The report: latest.json, a Markdown table of mpp-proxy's ratios to each peer, a PNG chart.

`python -m benchmarks.report [DIR]` renders latest.md and latest.png again from DIR/latest.json
(default benchmarks/results), with the goals of benchmarks/goals.py, e.g. after a change to
this renderer.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ORDER = ("direct", "granian", "nginx", "aiohttp", "starlette", "mpp")
NAMES = {
    "direct": "upstream direct",
    "granian": "granian fixed response",
    "nginx": "nginx rp",
    "aiohttp": "aiohttp",
    "starlette": "starlette+httpx",
    "mpp": "mpp-proxy",
}
PEERS = ("granian", "nginx", "aiohttp", "starlette")

# (scenario, field, label, unit, higher_is_better): one figure per target, ratios to each peer.
ROWS: tuple[tuple[str, str, str, str, bool], ...] = (
    ("get_small_c64", "rps", "small GET, 64 conns", "req/s", True),
    ("get_small_c64", "p50_ms", "small GET, 64 conns, p50", "ms", False),
    ("get_small_c64", "p99_ms", "small GET, 64 conns, p99", "ms", False),
    ("get_small_c1", "rps", "small GET, 1 conn", "req/s", True),
    ("get_small_c1", "p50_ms", "small GET, 1 conn, p50", "ms", False),
    ("get_small_c1", "p99_ms", "small GET, 1 conn, p99", "ms", False),
    ("get_64kib_c64", "mib_per_s", "64 KiB GET, 64 conns", "MiB/s", True),
    ("get_1mib_c64", "mib_per_s", "1 MiB GET, 64 conns", "MiB/s", True),
    ("upload_256kib", "rps", "256 KiB upload, 8 conns", "req/s", True),
    ("upload_256kib", "upload_mib_per_s", "256 KiB upload, 8 conns", "MiB/s", True),
    ("sse_1000_events", "median_ms", "SSE 1,000 events, time to last", "ms", False),
    (
        "get_small_c64",
        "server_cpu_us_per_request",
        "server CPU per request, small GET @64",
        "us",
        False,
    ),
)
# Counts with no ratio: connections the upstream accepted at steady state (0: pool reused).
COUNT_ROWS: tuple[tuple[str, str], ...] = (
    ("get_small_c64", "new upstream conns at steady state, small GET @64"),
    ("get_64kib_c64", "new upstream conns at steady state, 64 KiB GET @64"),
    ("get_1mib_c64", "new upstream conns at steady state, 1 MiB GET @64"),
)
STORES = (("paid_sqlite_c64", "SQLite (default store)"), ("paid_redis_c64", "Redis"))


def value(results: dict[str, Any], scenario: str, key: str, field: str) -> float | None:
    row = results["scenarios"].get(scenario, {}).get("targets", {}).get(key)
    if not isinstance(row, dict) or "error" in row or row.get(field) is None:
        return None
    return float(row[field])


def steady_count(results: dict[str, Any], scenario: str, key: str) -> float | None:
    row = results["scenarios"].get(scenario, {}).get("targets", {}).get(key) or {}
    # Counts from runs before the steady-state window was kept are not comparable: left out.
    if "upstream_count_window_s" not in row:
        return None
    return value(results, scenario, key, "upstream_new_connections")


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit in ("req/s", "") or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}"


def _ratio(mine: float | None, peer: float | None, higher_is_better: bool) -> str:
    if mine is None or peer is None or mine == 0 or peer == 0:
        return "n/a"
    return f"{(mine / peer) if higher_is_better else (peer / mine):.2f}x"


def _columns(results: dict[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The targets that ran (mpp-proxy always), and the peers mpp-proxy is set against."""
    ran = {
        k
        for scenario, field, *_ in ROWS
        for k in ORDER
        if value(results, scenario, k, field) is not None
    }
    order = tuple(k for k in ORDER if k in ran or k == "mpp")
    return order, tuple(p for p in PEERS if p in order)


def _peer_lines(results: dict[str, Any]) -> list[str]:
    order, peers = _columns(results)
    lines = []
    for scenario, field, label, unit, higher in ROWS:
        values = {k: value(results, scenario, k, field) for k in order}
        if all(v is None for v in values.values()):
            continue
        cells = [f"{label} ({unit})", *(_fmt(values[k], unit) for k in order)]
        cells += [
            _ratio(values["mpp"], values[p], higher) if values[p] is not None else "" for p in peers
        ]
        lines.append("| " + " | ".join(cells) + " |")
    for scenario, label in COUNT_ROWS:
        values = {k: steady_count(results, scenario, k) for k in order}
        if any(v is not None for v in values.values()):
            cells = [label, *("" if v is None else _fmt(v, "") for v in values.values())]
            lines.append("| " + " | ".join([*cells, *("" for _ in peers)]) + " |")
    return lines


def _mpp_lines(results: dict[str, Any]) -> list[str]:
    """Rows only mpp-proxy has (paid requests, workers, memory): the figure in its column."""
    order, peers = _columns(results)
    before = [""] * order.index("mpp")
    after = [""] * (len(order) - 1 - order.index("mpp") + len(peers))
    return [
        "| " + " | ".join([label, *before, cell, *after]) + " |"
        for label, cell in _mpp_only(results)
    ]


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    order, peers = _columns(results)
    head = ["scenario", *(NAMES[k] for k in order), *(f"mpp vs {NAMES[p]}" for p in peers)]
    lines = [
        "# mpp-proxy benchmark",
        "",
        f"`{results['command']}` at {env['when']} (git {env['git']}); {env['cpus']} CPUs "
        f"({env['cpu_model']}), servers on cpu {env['server_cpu']}, wrk + upstream on cpu "
        f"{env['load_cpu']}; {env['wrk']}; {env['nginx']}; Python {env['python']}.",
        "Each wrk figure is the best of its interleaved rounds (noise on a shared machine only "
        'takes throughput away). Ratios read as "times better": throughput mpp/peer, '
        "latency and time peer/mpp, so > 1.00x means mpp-proxy wins. Rows below the peers' "
        "are mpp-proxy's alone; paid requests are set against the free route of the same proxy "
        "in the same run.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
        *_peer_lines(results),
        *_mpp_lines(results),
        "",
        *_noise(results),
        "",
        "## Targets",
        "",
        "| target | value | goal | status |",
        "|---|---:|---|---|",
    ]
    for row in results.get("targets", []):
        status = {True: "met", False: "**missed**", None: "not run"}[row["met"]]
        if row.get("reported") and row["value"] is not None:
            status = "reported"
        value = "n/a" if row["value"] is None else f"{row['value']}"
        lines.append(f"| {row['target']} | {value} | {row['goal']} | {status} |")
    lines += _details(results)
    if results.get("not_run"):
        lines += ["", "## Not run", ""]
        lines += [f"- {name}: {why}" for name, why in results["not_run"].items()]
    return "\n".join(lines) + "\n"


def _noise(results: dict[str, Any]) -> list[str]:
    """How disturbed the selected runs were: steal and CPU used by processes outside the bench."""
    out = [
        "## Noise",
        "",
        "CPU seconds burnt by processes outside the benchmark during the selected runs (the",
        "machine is shared), and steal time. Per-process CPU for every run is in `latest.json`.",
        "",
        "| scenario | max other-process CPU (s) | max steal (%) |",
        "|---|---:|---:|",
    ]
    for name, scenario in results["scenarios"].items():
        rows = [r for r in scenario.get("targets", {}).values() if isinstance(r, dict)]
        others = [r["other_cpu_s"] for r in rows if "other_cpu_s" in r]
        steal = [r["steal_pct"] for r in rows if "steal_pct" in r]
        if others:
            out.append(f"| {name} | {max(others):.1f} | {max(steal):.1f} |")
    return out


def _details(results: dict[str, Any]) -> list[str]:
    """The in-process 402 figures per offer mix, and where the profiles are."""
    out: list[str] = []
    issuance = results.get("challenges", {}).get("issuance_us", {})
    if issuance:
        out += [
            "",
            "## 402 in process",
            "",
            "| offers | PaymentGate (us) | pympp handler (us) | ratio |",
        ]
        out.append("|---|---:|---:|---:|")
        for offers, row in issuance.items():
            out.append(f"| {offers} | {row['gate_us']} | {row['pympp_us']} | {row['ratio']}x |")
    profiles = [results[k] for k in ("profile", "profile_paid_sqlite") if k in results]
    if profiles:
        out += ["", "## Profiles", ""]
        out += [
            f"- `{p['file']}` (2xx/s under py-spy: {p['rps_while_profiling']})" for p in profiles
        ]
    return out


def _paid_cells(results: dict[str, Any], issue: dict[str, Any] | None) -> list[tuple[str, str]]:
    out = []
    for key, store in STORES:
        sc = results["scenarios"].get(key)
        if not sc:
            continue
        paid, free = sc["targets"]["paid"], sc["targets"]["free"]
        conns = sc["connections"]
        lower = " (lower bound)" if "warning" in paid else ""
        out.append(
            (f"paid GET, test money, {store}, {conns} conns (req/s)", f"{paid['paid_rps']:,.0f}")
        )
        label = f"free GET, same proxy and run, {store}, {conns} conns (req/s)"
        out.append((label, f"{free['rps']:,.0f}"))
        out.append((f"paid / free, {store}", f"{sc['paid_over_free']:.2f}x{lower}"))
        if key == "paid_sqlite_c64" and issue and paid["paid_rps"]:
            # One core does both legs: the rates add as times.
            both = 1 / (1 / issue["rps"] + 1 / paid["paid_rps"])
            out.append((f"paid round trip, 402 + paid, {store} (derived, /s)", f"{both:,.0f}"))
    return out


def _mpp_only(results: dict[str, Any]) -> list[tuple[str, str]]:
    sc = results["scenarios"]
    out = []
    issue = sc.get("issue_402", {}).get("targets", {}).get("mpp")
    issue = issue if issue and "error" not in issue else None
    if issue:
        out.append(("402 issuance, 64 conns (req/s)", f"{issue['rps']:,.0f}"))
    worst = results.get("challenges", {}).get("worst_ratio")
    if worst:
        out.append(("402 in process vs pympp's handler, worst offer mix", f"{worst}x"))
    out += _paid_cells(results, issue)
    evm = sc.get("paid_evm")
    if evm and "error" not in evm:
        label = "paid GET, EVM (ecrecover), memory://, 16 conns (req/s)"
        out.append((label, f"{evm['round_trips_per_s']:,.0f}"))
    workers = sc.get("workers_cpu")
    if workers and workers.get("cpu_per_request_2_over_1"):
        one = workers["targets"]["workers_1"]["server_cpu_us_per_request"]
        two = workers["targets"]["workers_2"]["server_cpu_us_per_request"]
        out.append(
            (
                "server CPU per request, small GET @64, --workers 2 / 1 (us)",
                f"{two} / {one} = {workers['cpu_per_request_2_over_1']:.2f}x",
            )
        )
    rss = sc.get("rss")
    if rss:
        a, b = rss["after_20k"], rss["after_200k"]
        out.append(
            (
                f"RSS after {a['requests']:,} -> {b['requests']:,} requests (MiB)",
                f"{a['rss_mib']} -> {b['rss_mib']} ({rss['growth_pct']:+.2f}%)",
            )
        )
    return out


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("get_small_c64", "rps", "small GET, 64 conns (req/s)"),
        ("get_small_c1", "p50_ms", "small GET, 1 conn, p50 (ms, lower better)"),
        ("get_1mib_c64", "mib_per_s", "1 MiB GET, 64 conns (MiB/s)"),
        ("upload_256kib", "rps", "256 KiB upload (req/s)"),
        ("get_64kib_c64", "mib_per_s", "64 KiB GET, 64 conns (MiB/s)"),
        ("get_small_c64", "server_cpu_us_per_request", "server CPU per request @64 (us)"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    colors = {
        "direct": "#999999",
        "granian": "#5f3dc4",
        "nginx": "#2b8a3e",
        "aiohttp": "#1c7ed6",
        "starlette": "#f08c00",
        "mpp": "#c2255c",
    }
    for ax, (scenario, field, title) in zip(axes.flat, panels, strict=True):
        keys = [k for k in ORDER if value(results, scenario, k, field) is not None]
        values = [value(results, scenario, k, field) or 0.0 for k in keys]
        bars = ax.bar([NAMES[k] for k in keys], values, color=[colors[k] for k in keys])
        ax.bar_label(
            bars, labels=[_fmt(v, "") if v >= 100 else f"{v:.2f}" for v in values], fontsize=8
        )
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelrotation=20, labelsize=8)
    env = results["environment"]
    fig.suptitle(f"mpp-proxy vs peers ({env['when']}, git {env['git']}, {env['cpus']} CPUs)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(results: dict[str, Any], directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    (directory / "latest.md").write_text(markdown(results))
    chart(results, directory / "latest.png")


def main(argv: list[str] | None = None) -> None:
    from benchmarks.goals import evaluate

    args = sys.argv[1:] if argv is None else argv
    directory = Path(args[0]) if args else Path(__file__).resolve().parent / "results"
    results = json.loads((directory / "latest.json").read_text())
    # Today's goals, held against the figures the run measured; latest.json stays as it was.
    results["targets"] = evaluate(results)
    (directory / "latest.md").write_text(markdown(results))
    chart(results, directory / "latest.png")


if __name__ == "__main__":
    main()
