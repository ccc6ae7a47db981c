"""The goals a full run is held to, read off its results as ratios of figures from the same run."""

from __future__ import annotations

from typing import Any

from benchmarks.report import NAMES, steady_count, value


def ratio(a: float | None, b: float | None) -> float | None:
    if not a or not b:
        return None
    return round(a / b, 3)


def row(metric: str, figure: float | None, goal: str, met: bool | None) -> dict[str, Any]:
    return {"target": metric, "value": figure, "goal": goal, "met": met}


def at_least(metric: str, figure: float | None, floor: float) -> dict[str, Any]:
    return row(metric, figure, f">= {floor}x", None if figure is None else figure >= floor)


def reported(metric: str, figure: float | None, goal: str = "reported") -> dict[str, Any]:
    """A figure the goals ask to see, with no bar to pass: status "reported" once measured."""
    return {**row(metric, figure, goal, None), "reported": True}


def _peer_ratios(results: dict[str, Any]) -> list[dict[str, Any]]:
    def vs(scenario: str, field: str, peer: str) -> float | None:
        return ratio(value(results, scenario, "mpp", field), value(results, scenario, peer, field))

    rows = [
        at_least(f"small GET @64 rps vs {NAMES[peer]}", vs("get_small_c64", "rps", peer), goal)
        for peer, goal in (("aiohttp", 1.5), ("starlette", 15.0), ("nginx", 0.5))
    ]
    rows.append(
        reported(
            "small GET @64 rps vs granian fixed response (the ceiling)",
            vs("get_small_c64", "rps", "granian"),
            "reported (about 0.6x)",
        )
    )
    p_mpp = value(results, "get_small_c1", "mpp", "p50_ms")
    p_aio = value(results, "get_small_c1", "aiohttp", "p50_ms")
    rows.append(
        row(
            "p50 @1 connection vs aiohttp (ms, mpp/aiohttp)",
            ratio(p_mpp, p_aio),
            "<= 1.0x",
            None if p_mpp is None or p_aio is None else p_mpp <= p_aio,
        )
    )
    for peer, goal in (("aiohttp", 1.2), ("nginx", 0.8)):
        rows.append(
            at_least(f"1 MiB GET @64 vs {NAMES[peer]}", vs("get_1mib_c64", "mib_per_s", peer), goal)
        )
    rows.append(at_least("256 KiB upload vs aiohttp", vs("upload_256kib", "rps", "aiohttp"), 1.2))
    return rows


def steady_connections(results: dict[str, Any]) -> int | None:
    """The most new upstream connections mpp-proxy opened at steady state in a GET @64 run."""
    counts = [
        steady_count(results, name, "mpp")
        for name in ("get_small_c64", "get_64kib_c64", "get_1mib_c64")
    ]
    seen = [c for c in counts if c is not None]
    return int(max(seen)) if seen else None


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every goal: the figure, the bar, and whether this run met it (None: not run)."""
    sc = results["scenarios"]
    rows = _peer_ratios(results)
    conns = steady_connections(results)
    rows.append(
        row(
            "new upstream connections at steady state (GET @64, most of small/64 KiB/1 MiB)",
            conns,
            "0",
            None if conns is None else conns == 0,
        )
    )
    rows.append(
        at_least(
            "paid / free req/s, SQLite (default store), 64 conns",
            sc.get("paid_sqlite_c64", {}).get("paid_over_free"),
            0.5,
        )
    )
    rows.append(
        reported(
            "paid / free req/s, Redis, 64 conns", sc.get("paid_redis_c64", {}).get("paid_over_free")
        )
    )
    cpu = sc.get("workers_cpu", {}).get("cpu_per_request_2_over_1")
    rows.append(
        row(
            "server CPU per request, --workers 2 / 1 worker (small GET @64)",
            cpu,
            "<= 1.1x",
            None if cpu is None else cpu <= 1.1,
        )
    )
    # Like for like, in process (benchmarks/challenges.py): the worst offer mix counts.
    rows.append(
        at_least(
            "402 issuance vs pympp handler (in process, worst offer mix)",
            results.get("challenges", {}).get("worst_ratio"),
            5,
        )
    )
    growth = sc.get("rss", {}).get("growth_pct")
    rows.append(
        row(
            "RSS growth 20k -> 200k requests (%)",
            growth,
            "< 10%",
            None if growth is None else growth < 10,
        )
    )
    return rows
