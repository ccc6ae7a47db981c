"""Paid requests against free ones on the same proxy, per state store (SQLite, Redis).

One mpp-proxy per store, with a free route and a test-money paid route. Each round measures
the free route at 64 connections, then paid requests at 64 connections with credentials
pre-signed for that round (benchmarks/paid.py), after a short paid pilot that warms the proxy
up and sizes the batch: the ratio paid/free says what paying costs, whatever the machine's
speed. Two rounds at most (signing credentials takes longer than spending them). The default
store is what `state` left out gives (SQLite, a file in the proxy's working directory); Redis
is a private redis-server on a free loopback port, beside the upstream.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.load import wrk
from benchmarks.paid import credential_scripts, test_money_signer
from benchmarks.procs import Server, ensure_debian_packages, free_port, redis_ready

if TYPE_CHECKING:
    from benchmarks.run import Bench, Target

CONNECTIONS = 64
STORES = {"sqlite": "SQLite (default store)", "redis": "Redis"}
# Collecting and signing credentials is the slow part (~0.5 ms each in Python), so a measured
# run gets what a pilot run says it will spend, with a margin: PILOT_MARGIN x the pilot's paid
# rate, at most BUDGET_SHARE x the free route's rate (the free route bounds the paid one).
# Should paid requests go faster still, the credentials run out, the rest are refused replays,
# and the paid rate is reported as a lower bound (flagged).
PILOT_PER_S = 4_000
PILOT_MARGIN = 2.0
BUDGET_SHARE = 0.75
MIN_CREDENTIALS = 2_000


def credential_budget(rate: float, seconds: float) -> int:
    """Credentials enough for `seconds` of wrk (it runs whole seconds) at `rate`."""
    return max(MIN_CREDENTIALS, int(rate * max(1, round(seconds))))


def _start_redis(bench: Bench) -> Server:
    ensure_debian_packages({"redis-server": "redis-server"})
    port = free_port()
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    argv += ["--save", "", "--appendonly", "no", "--dir", str(bench.work)]
    # Beside the upstream on the load side: the proxy's core is the one under test.
    server = Server(
        "redis", bench.cores.pin(argv, bench.cores.load), port, bench.work, ready=redis_ready
    )
    bench.start(server)
    return server


@contextlib.contextmanager
def paid_proxy(bench: Bench, store: str) -> Iterator[Target]:
    """mpp-proxy (1 granian worker, pinned like every target) with a paid route on `store`."""
    from benchmarks.run import mpp_config, start_mpp_with

    assert bench.upstream is not None
    redis = _start_redis(bench) if store == "redis" else None
    target: Target | None = None
    try:
        state = f"redis://127.0.0.1:{redis.port}/0" if redis else None
        # A fresh working directory each time: a fresh default store (the SQLite file).
        home = Path(tempfile.mkdtemp(prefix=f"mpp-{store}-", dir=bench.work))
        config = mpp_config(home / "proxy.toml", bench.upstream.port, paid=True, state=state)
        target = start_mpp_with(bench, config, f"mpp-proxy-{store}", cwd=home)
        target.store = redis
        yield target
    finally:
        for server in ([*target.servers] if target else []) + ([redis] if redis else []):
            bench.stop(server)


def pilot_rate(bench: Bench, target: Target, name: str, free_rps: float) -> float:
    """Paid requests per second in a short run (the warm-up), for sizing the measured one.

    Bounded by the free route's rate; should the pilot's credentials run out, that bound is it.
    """
    seconds = max(1, bench.plan.warmup)
    count = max(MIN_CREDENTIALS, round(PILOT_PER_S * seconds))
    url = target.url("/paid")
    (script,) = credential_scripts(bench, url, f"{name}-pilot", test_money_signer(), (count,))
    pilot = wrk(url, CONNECTIONS, seconds, bench.load_pin, script)
    bound = BUDGET_SHARE * free_rps
    if pilot.non_2xx:
        return bound
    return min(bound, PILOT_MARGIN * (pilot.requests - pilot.non_2xx) / pilot.seconds)


def paid_run(bench: Bench, target: Target, name: str, free_rps: float) -> dict[str, Any]:
    """One measured run of paid requests, after a pilot that warms up and sizes it."""
    from benchmarks.run import measure

    rate = pilot_rate(bench, target, name, free_rps)
    count = credential_budget(rate, bench.plan.seconds)
    (measured,) = credential_scripts(
        bench, target.url("/paid"), name, test_money_signer(), (count,)
    )
    row = measure(bench, target, "/paid", CONNECTIONS, bench.plan.seconds, measured, warm_up=False)
    paid = row["requests"] - row["non_2xx"]
    row["credentials"] = count
    row["paid_requests"] = paid
    row["paid_rps"] = round(paid / row["seconds"], 1)
    row["server_cpu_us_per_request"] = round(1e6 * row["cpu_s"]["server"] / max(1, paid), 1)
    if row["non_2xx"]:
        row["warning"] = (
            f"{row['non_2xx']} paid requests were not 2xx (credentials ran out or were "
            "refused): the paid rate is a lower bound"
        )
    return row


def run_paid_store(
    bench: Bench, store: str, rounds: int | None = None, name: str | None = None
) -> dict[str, Any]:
    """Rounds of free then paid on one proxy; keeps each side's best round and their ratio."""
    from benchmarks.run import measure

    name = name or f"paid_{store}_c{CONNECTIONS}"
    n = rounds or min(2, bench.plan.rounds)
    free_rows: list[dict[str, Any]] = []
    paid_rows: list[dict[str, Any]] = []
    with paid_proxy(bench, store) as target:
        for round_no in range(n):
            free = measure(bench, target, "/small", CONNECTIONS, bench.plan.seconds)
            paid = paid_run(bench, target, f"{name}-{round_no}", free["rps"])
            free_rows.append(free)
            paid_rows.append(paid)
            print(
                f"  {name} [{round_no + 1}/{n}]: paid {paid['paid_rps']:.0f} req/s, free "
                f"{free['rps']:.0f} req/s ({paid['paid_rps'] / max(1.0, free['rps']):.2f}x); "
                f"server {paid['server_cpu_us_per_request']} us/paid request; others "
                f"{max(free['other_cpu_s'], paid['other_cpu_s']):.1f} cpu-s"
                + (f"; {paid['warning']}" if "warning" in paid else "")
            )
    best_free = max(free_rows, key=lambda r: float(r["rps"]))
    best_paid = max(paid_rows, key=lambda r: float(r["paid_rps"]))
    scenario = {
        "store": STORES[store],
        "connections": CONNECTIONS,
        "seconds": bench.plan.seconds,
        "rounds": n,
        "selected_by": "best paid_rps and best free rps",
        "targets": {
            "free": {**best_free, "all_rounds": [r["rps"] for r in free_rows]},
            "paid": {**best_paid, "all_rounds": [r["paid_rps"] for r in paid_rows]},
        },
        "paid_over_free": round(best_paid["paid_rps"] / max(1.0, best_free["rps"]), 3),
    }
    bench.results["scenarios"][name] = scenario
    return scenario


def profile_paid(bench: Bench) -> None:
    """py-spy on a fresh SQLite proxy serving paid requests: results/profile-paid-sqlite.txt."""
    from benchmarks.profile import record
    from benchmarks.report import value
    from benchmarks.run import measure

    with paid_proxy(bench, "sqlite") as target:
        # Budget from the paid rate measured without py-spy (faster than under it), else from
        # a pilot run.
        rate = value(bench.results, "paid_sqlite_c64", "paid", "paid_rps") or pilot_rate(
            bench,
            target,
            "profile-paid",
            measure(bench, target, "/small", CONNECTIONS, bench.plan.seconds)["rps"],
        )

        def script(mode: str, seconds: float) -> Path:
            # Twice the budget: sampling at 100-200 Hz barely slows the worker, and a replayed
            # credential, once they run out, is a cheap refusal that would fill the profile.
            count = credential_budget(2 * rate, seconds)
            (replay,) = credential_scripts(
                bench, target.url("/paid"), f"profile-paid-{mode}", test_money_signer(), (count,)
            )
            return replay

        bench.results["profile_paid_sqlite"] = record(
            bench,
            target,
            "/paid",
            "paid GET (test money, pre-signed), SQLite (default store)",
            "profile-paid-sqlite.txt",
            script,
        )
