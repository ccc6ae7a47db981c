"""The report: latest.json, a Markdown table of mpp-proxy's ratios to each peer, a PNG chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ORDER = ("direct", "nginx", "aiohttp", "starlette", "mpp")
NAMES = {
    "direct": "upstream direct",
    "nginx": "nginx rp",
    "aiohttp": "aiohttp",
    "starlette": "starlette+httpx",
    "mpp": "mpp-proxy",
}
PEERS = ("nginx", "aiohttp", "starlette")

# (scenario, field, label, unit, higher_is_better)
ROWS: tuple[tuple[str, str, str, str, bool], ...] = (
    ("get_small_c64", "rps", "small GET, 64 conns", "req/s", True),
    ("get_small_c64", "p50_ms", "small GET, 64 conns, p50", "ms", False),
    ("get_small_c64", "p99_ms", "small GET, 64 conns, p99", "ms", False),
    ("get_small_c1", "rps", "small GET, 1 conn", "req/s", True),
    ("get_small_c1", "p50_ms", "small GET, 1 conn, p50", "ms", False),
    ("get_small_c1", "p99_ms", "small GET, 1 conn, p99", "ms", False),
    ("download_1mib", "mib_per_s", "1 MiB download, 8 conns", "MiB/s", True),
    ("upload_256kib", "rps", "256 KiB upload, 8 conns", "req/s", True),
    ("upload_256kib", "upload_mib_per_s", "256 KiB upload, 8 conns", "MiB/s", True),
    ("sse_1000_events", "median_ms", "SSE 1,000 events, time to last", "ms", False),
    ("get_small_c64", "upstream_new_connections", "new upstream conns (small GET @64)", "", False),
    ("get_small_c64", "server_cpu_us_per_request", "server CPU per request @64", "us", False),
)


def _value(results: dict[str, Any], scenario: str, key: str, field: str) -> float | None:
    row = results["scenarios"].get(scenario, {}).get("targets", {}).get(key)
    if not isinstance(row, dict) or "error" in row or row.get(field) is None:
        return None
    return float(row[field])


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


def markdown(results: dict[str, Any]) -> str:
    env = results["environment"]
    head = ["scenario", *(NAMES[k] for k in ORDER), *(f"mpp vs {NAMES[p]}" for p in PEERS)]
    lines = [
        "# mpp-proxy benchmark",
        "",
        f"`{results['command']}` at {env['when']} (git {env['git']}); {env['cpus']} CPUs "
        f"({env['cpu_model']}), servers on cpu {env['server_cpu']}, wrk + upstream on cpu "
        f"{env['load_cpu']}; {env['wrk']}; {env['nginx']}; Python {env['python']}.",
        "Each wrk figure is the best of its interleaved rounds (noise on a shared machine only "
        'takes throughput away). Ratios read as "times better": throughput mpp/peer, '
        "latency and time peer/mpp, so > 1.00x means mpp-proxy wins.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
    ]
    for scenario, field, label, unit, higher in ROWS:
        values = {k: _value(results, scenario, k, field) for k in ORDER}
        if all(v is None for v in values.values()):
            continue
        cells = [f"{label}" + (f" ({unit})" if unit else "")]
        cells += [_fmt(values[k], unit) for k in ORDER]
        if field == "upstream_new_connections":
            cells += ["" for _ in PEERS]
        else:
            cells += [_ratio(values["mpp"], values[p], higher) for p in PEERS]
        lines.append("| " + " | ".join(cells) + " |")

    extra = _mpp_only(results)
    if extra:
        lines += ["", "| mpp-proxy only | value |", "|---|---:|", *extra]

    lines += [
        "",
        "## Targets",
        "",
        "| target | value | goal | status |",
        "|---|---:|---|---|",
    ]
    for row in results.get("targets", []):
        status = {True: "met", False: "**missed**", None: "not run"}[row["met"]]
        value = "n/a" if row["value"] is None else f"{row['value']}"
        lines.append(f"| {row['target']} | {value} | {row['goal']} | {status} |")
    if results.get("not_run"):
        lines += ["", "## Not run", ""]
        lines += [f"- {name}: {why}" for name, why in results["not_run"].items()]
    lines += ["", *_noise(results)]
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


def _mpp_only(results: dict[str, Any]) -> list[str]:
    sc = results["scenarios"]
    out = []
    issue = sc.get("issue_402", {}).get("targets", {}).get("mpp")
    if issue and "error" not in issue:
        out.append(f"| 402 issuance, 64 conns (req/s) | {issue['rps']:,.0f} |")
    for offers, row in results.get("challenges", {}).get("issuance_us", {}).items():
        out.append(
            f"| 402 in process, {offers}: PaymentGate {row['gate_us']} us vs pympp handler "
            f"{row['pympp_us']} us | {row['ratio']}x |"
        )
    for key, label in (
        ("paid_test", "paid request, test money, pre-signed, 16 conns"),
        ("paid_evm", "paid request, EVM (ecrecover), pre-signed, 16 conns"),
    ):
        row = sc.get(key)
        if row and "error" not in row:
            out.append(f"| {label} (req/s) | {row['round_trips_per_s']:,.0f} |")
            if issue and "error" not in issue and row["round_trips_per_s"]:
                # One core does both legs: the rates add as times.
                both = 1 / (1 / issue["rps"] + 1 / row["round_trips_per_s"])
                out.append(f"| {label}: whole round trip, 402 + paid (derived, /s) | {both:,.0f} |")
    rss = sc.get("rss")
    if rss:
        for point in (rss["after_20k"], rss["after_200k"]):
            out.append(f"| RSS after {point['requests']:,} requests (MiB) | {point['rss_mib']} |")
        out.append(f"| RSS growth (%) | {rss['growth_pct']} |")
    return out


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("get_small_c64", "rps", "small GET, 64 conns (req/s)"),
        ("get_small_c1", "p50_ms", "small GET, 1 conn, p50 (ms, lower better)"),
        ("download_1mib", "mib_per_s", "1 MiB download (MiB/s)"),
        ("upload_256kib", "rps", "256 KiB upload (req/s)"),
        ("sse_1000_events", "median_ms", "SSE 1,000 events (ms, lower better)"),
        ("get_small_c64", "server_cpu_us_per_request", "server CPU per request @64 (us)"),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    colors = {
        "direct": "#999999",
        "nginx": "#2b8a3e",
        "aiohttp": "#1c7ed6",
        "starlette": "#f08c00",
        "mpp": "#c2255c",
    }
    for ax, (scenario, field, title) in zip(axes.flat, panels, strict=True):
        keys = [k for k in ORDER if _value(results, scenario, k, field) is not None]
        values = [_value(results, scenario, k, field) or 0.0 for k in keys]
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
