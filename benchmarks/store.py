"""Per-call cost of the stores on the payment path, and how SQLite calls reach the database.

    .venv/bin/python benchmarks/store.py [N] [normal|full]
    .venv/bin/python benchmarks/store.py URL [N]      (any state URL: memory://, redis://)

For each dispatch strategy it times N insert_payment, N transition (in_flight -> delivered),
N get_payment and N put_if_absent calls, one at a time and 32 at once, on a WAL file in a temp
directory, under uvloop (as served by granian). Strategies:
  worker   -- what SQLiteStore does: one dedicated thread fed by a SimpleQueue (CallThread)
  to_thread-- asyncio.to_thread (shared default pool) plus a lock around the connection
  inline   -- the blocking call on the event loop thread (the floor; unsafe when another
              process holds the write lock, because the loop would stall for busy_timeout)
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpp_proxy.state import PaymentStatus, Store, open_store
from mpp_proxy.state.sqlite import SQLiteStore

sys.path.insert(0, str(Path(__file__).parent))
from sqlite_worker import row


def patch(strategy: str) -> None:
    if strategy == "worker":
        return
    lock = threading.Lock()

    def locked(fn: Callable[..., Any], *args: Any) -> Any:
        with lock:
            return fn(*args)

    async def via_to_thread(self: SQLiteStore, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(locked, fn, *args)

    async def inline(self: SQLiteStore, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)

    SQLiteStore._call = via_to_thread if strategy == "to_thread" else inline  # type: ignore[method-assign]


async def timed(n: int, conc: int, make: Callable[[int], Awaitable[Any]]) -> float:
    """Microseconds per call, `conc` calls in flight at a time."""
    start = time.perf_counter()
    if conc == 1:
        for i in range(n):
            await make(i)
    else:
        for base in range(0, n, conc):
            await asyncio.gather(*(make(i) for i in range(base, min(base + conc, n))))
    return (time.perf_counter() - start) / n * 1e6


def _operations(store: Store, tag: str, n: int) -> dict[str, Callable[[int], Awaitable[Any]]]:
    rows = [row(f"{tag}-{i}", PaymentStatus.IN_FLIGHT, "w") for i in range(n)]

    async def insert(i: int) -> Any:
        return await store.insert_payment(rows[i])

    async def transition(i: int) -> Any:
        return await store.transition(
            f"{tag}-{i}",
            expect=(PaymentStatus.IN_FLIGHT,),
            status=PaymentStatus.DELIVERED,
            expect_owner="w",
            owner="",
            reference="0xfeed",
        )

    async def get(i: int) -> Any:
        return await store.get_payment(f"{tag}-{i}")

    async def put_if_absent(i: int) -> Any:
        return await store.put_if_absent(f"{tag}-{i}", "0xfeed")

    # Order matters: each transition finds the row its insert made.
    return {
        "insert": insert,
        "transition": transition,
        "get": get,
        "put_if_absent": put_if_absent,
    }


async def run(strategy: str, n: int, synchronous: str) -> dict[str, float]:
    original = SQLiteStore._call
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteStore(str(Path(tmp) / "bench.db"), synchronous=synchronous)
        await store.open()
        patch(strategy)
        try:
            out: dict[str, float] = {}
            for conc in (1, 32):
                for name, op in _operations(store, f"c{conc}", n).items():
                    out[f"{name} c{conc}"] = await timed(n, conc, op)
            return out
        finally:
            SQLiteStore._call = original  # type: ignore[method-assign]
            await store.close()


async def run_url(url: str, n: int) -> dict[str, float]:
    store = open_store(url)
    await store.open()
    try:
        out: dict[str, float] = {}
        for conc in (1, 32):
            for name, op in _operations(store, f"c{conc}-{time.time_ns()}", n).items():
                out[f"{name} c{conc}"] = await timed(n, conc, op)
        return out
    finally:
        await store.close()


def main() -> None:
    if len(sys.argv) > 1 and "://" in sys.argv[1]:
        url = sys.argv[1]
        n = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
        by_op = uvloop.run(run_url(url, n))
        print(f"us per call, N={n}, {url.split('?')[0]}, uvloop")
        for name, us in by_op.items():
            print(f"{name:<22}{us:>10.1f}")
        return
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    synchronous = sys.argv[2] if len(sys.argv) > 2 else "normal"
    strategies = ("worker", "to_thread", "inline")
    # Best of 3 rounds, strategies interleaved: the machine is shared and noisy.
    results: dict[str, dict[str, float]] = {}
    for _round in range(3):
        for strategy in strategies:
            got = uvloop.run(run(strategy, n, synchronous))
            best = results.setdefault(strategy, got)
            for name, us in got.items():
                best[name] = min(best[name], us)
    names = list(results["worker"])
    print(f"us per call (best of 3), N={n}, sqlite WAL synchronous={synchronous}, uvloop")
    print(f"{'operation':<22}" + "".join(f"{s:>12}" for s in results))
    for name in names:
        print(f"{name:<22}" + "".join(f"{results[s][name]:>12.1f}" for s in results))


if __name__ == "__main__":
    main()
