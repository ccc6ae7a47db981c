"""Instructions per request of a whole server (granian's Rust and our Python), under callgrind.

A proxy from this checkout runs under valgrind's callgrind twice, once for a short wrk run and
once for a long one; the difference of the two totals over the difference of the requests
served is what a request costs, with start-up and shutdown cancelled out. Instructions do not
depend on what else the machine runs, so two configurations measured this way compare closely
(what start-up costs still varies a little from one life to the next: the long run is long).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.compare import ROOT, SERVICE, start_proxy
from benchmarks.procs import Cores

CONNECTIONS = 64  # a small GET at 64 connections, as the side-by-side runs load it
# The metrics and log flush period under callgrind, where a server answers ~200 requests a
# second: a flush covers ~1,000 requests (at full speed 0.5 s covers ~10,000, so what a flush
# costs weighs more here than it does there) and a long run holds several.
FLUSH_SECONDS = 5.0


@dataclass(frozen=True)
class Side:
    """One configuration of the proxy: compare's config template, extra tables, environment."""

    config_text: str
    extra: str = ""
    env: dict[str, str] = field(default_factory=dict)


def served_instructions(
    work: Path, upstream: int, cores: Cores, side: Side, tag: str, seconds: float
) -> tuple[int, list[int]]:
    """(instructions per request, [requests of the short run, of the long run]): two lives,
    one of 3 s of wrk and one of 3 s more than `seconds`; start-up and shutdown cancel out.
    (Zeroing the counters once warm would be exact, but callgrind_control cannot reach
    granian's worker: it is forked, and valgrind's control channel is not.)"""
    short = _life(work, upstream, cores, side, f"{tag}-short", 3)
    long = _life(work, upstream, cores, side, f"{tag}-long", 3 + seconds)
    per_request = round((long[0] - short[0]) / max(1, long[1] - short[1]))
    return per_request, [short[1], long[1]]


def _life(
    work: Path, upstream: int, cores: Cores, side: Side, tag: str, seconds: float
) -> tuple[int, int]:
    """One server's whole life under callgrind: (its instructions, the requests it served)."""
    from benchmarks.load import wrk

    out = work / f"callgrind-{tag}"
    wrapper = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p"]
    env = {"MPP_PROXY_FLUSH_SECONDS": str(FLUSH_SECONDS), **side.env}
    server = start_proxy(
        tag, ROOT, work, upstream, cores, side.config_text, wrapper, extra=side.extra, env=env
    )
    try:
        url = f"http://127.0.0.1:{server.port}/{SERVICE}/small"
        done = wrk(url, CONNECTIONS, seconds, cores.pin([], cores.load)).requests
    finally:
        server.stop(grace=60)
    total = 0
    for dump in work.glob(f"callgrind-{tag}.*"):  # granian and its worker
        found = re.search(r"^summary: (\d+)", dump.read_text(errors="replace"), re.M)
        assert found, dump
        total += int(found.group(1))
    return total, done + 1  # and the readiness check
