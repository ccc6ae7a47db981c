"""One side of benchmarks.observe_cost: CPU per request of the ASGI app driven in-process.

Run as a file (`python benchmarks/observe_side.py CONFIG REQUESTS CONCURRENCY`) with the
mpp_proxy to measure first on PYTHONPATH; prints `RESULT <us>` on stderr. Under valgrind's
callgrind with OBSERVE_COST_CALLGRIND=1 the result is instructions per request instead.
"""

from __future__ import annotations

import asyncio
import glob
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SCOPE: dict[str, Any] = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "GET",
    "scheme": "http",
    "path": "/bench/small",
    "raw_path": b"/bench/small",
    "query_string": b"",
    "root_path": "",
    "headers": [(b"host", b"127.0.0.1"), (b"user-agent", b"wrk"), (b"accept", b"*/*")],
    "client": ("127.0.0.1", 40000),
    "server": ("127.0.0.1", 4402),
}


async def drive(config: str, requests: int, concurrency: int) -> float:
    """CPU microseconds per request of `requests` GETs through the app, after a warm-up."""
    from mpp_proxy import Proxy, load_config

    try:  # this checkout: flush once, explicitly, after the measured requests (see below)
        import mpp_proxy.observe as observe

        observe.FLUSH_SECONDS = 3600.0  # type: ignore[attr-defined]
    except ImportError:  # a commit from before mpp_proxy.observe
        pass
    app = Proxy(load_config(config))
    events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    started = asyncio.Event()
    await events.put({"type": "lifespan.startup"})

    async def lifespan_send(message: dict[str, Any]) -> None:
        if message["type"] == "lifespan.startup.complete":
            started.set()

    lifespan = asyncio.create_task(app({"type": "lifespan"}, events.get, lifespan_send))
    await started.wait()

    async def receive() -> dict[str, Any]:
        # A bodyless GET never reads its body; the disconnect watch waits here, as it would
        # on a client that stays connected (it is cancelled when the response is done).
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        return None

    async def worker(n: int) -> None:
        for _ in range(n):
            await app(dict(SCOPE), receive, send)

    await asyncio.gather(*(worker(200) for _ in range(concurrency)))  # warm-up
    flush = getattr(getattr(app, "observer", None), "flush", None)
    if flush is not None:
        # What a server does once, at its first flush (prometheus-client's values made, in
        # multiprocess mode each with its file), is not counted against the requests below.
        flush()
    counting = os.environ.get("OBSERVE_COST_CALLGRIND")
    if counting:  # zero the counters: what follows is what is counted
        subprocess.run(
            ["callgrind_control", "-z", str(os.getpid())], capture_output=True, check=True
        )
    cpu = time.process_time()
    await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
    # The work the periodic flush does for these requests, counted with them: the period is
    # wall-clock time, which under callgrind passes ~50 times slower than the requests do.
    if flush is not None:
        flush()
    used = time.process_time() - cpu
    done = requests // concurrency * concurrency
    if counting:
        used = _instructions() / 1e6  # reported as "us": millions of instructions
    await events.put({"type": "lifespan.shutdown"})
    await lifespan
    return 1e6 * used / done


def _instructions() -> int:
    """Under valgrind's callgrind: dump the counters; the instructions this process ran since
    they were zeroed."""
    pid = os.getpid()
    before = set(glob.glob(f"callgrind.out.{pid}*"))
    subprocess.run(["callgrind_control", "-d", str(pid)], capture_output=True, check=True)
    new = sorted(set(glob.glob(f"callgrind.out.{pid}*")) - before)
    for line in Path(new[-1]).read_text().splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise RuntimeError("no totals in the callgrind dump")


def main() -> int:
    import uvloop

    config, requests, concurrency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    us = uvloop.run(drive(config, requests, concurrency))
    print(f"RESULT {us:.2f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
