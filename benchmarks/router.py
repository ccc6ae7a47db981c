"""Router benchmark: trie match cost at 10, 100 and 1,000 routes against a linear regex scan.

Run: .venv/bin/python -m benchmarks.router [--repeats 101] [--batch 200]

The scan is what the reference proxies (Starlette, aiohttp) do: one compiled regex per route,
tried in config order, first full match wins. Both sides see the same requests (uniform over the
routes, so the scan walks the whole table for a miss and half of it on average for a hit) in the
same run; the figures are medians (and minimums) of short interleaved batches, each timed right
after an untimed pass over the same requests (steady state, warm caches).
"""

from __future__ import annotations

import argparse
import gc
import random
import re
import statistics
import time
from collections.abc import Callable

from mpp_proxy.config.model import Route, Service
from mpp_proxy.router import Match, Router

SIZES = (10, 100, 1000)
TARGET_SCAN_RATIO = 20.0  # trie at 1,000 routes at least this much faster than the scan
TARGET_FLATNESS = 2.0  # trie at 1,000 routes within this factor of its cost at 10 routes

# Five routes per resource, the shapes of a typical REST API.
SHAPES = (
    ("GET", "/v1/r{i}", "/v1/r{i}"),
    ("POST", "/v1/r{i}", "/v1/r{i}"),
    ("GET", "/v1/r{i}/:id", "/v1/r{i}/obj_81f2a"),
    ("DELETE", "/v1/r{i}/:id", "/v1/r{i}/obj_81f2a"),
    ("GET", "/v1/r{i}/:id/files/*", "/v1/r{i}/obj_81f2a/files/2026/report.pdf"),
)

Matcher = Callable[[str, str], object]


def build(n: int) -> tuple[Service, list[tuple[str, str, Route]]]:
    """A service with n routes, and one concrete (method, path, expected route) per route."""
    routes: list[Route] = []
    samples: list[tuple[str, str, Route]] = []
    for k in range(n):
        method, pattern, path = SHAPES[k % len(SHAPES)]
        i = k // len(SHAPES)
        route = Route(method, pattern.format(i=i))
        routes.append(route)
        samples.append((method, "/api" + path.format(i=i), route))
    return Service(id="api", base_url="http://127.0.0.1:1", routes=tuple(routes)), samples


def regex_scan(service: Service) -> Matcher:
    """First-match linear scan, as Starlette's and aiohttp's routers (our peers) resolve a request.

    One compiled regex per route over the full path; the path is tried first, then the method,
    and a path match with the wrong method is remembered (for a 405) while the scan goes on.
    """
    table: list[tuple[re.Pattern[str], str, Route]] = []
    for route in service.routes:
        parts = []
        for seg in route.pattern[1:].split("/"):
            if seg == "*":
                parts.append(".+")
            elif seg.startswith(":"):
                parts.append(f"(?P<{seg[1:]}>[^/]+)")
            else:
                parts.append(re.escape(seg))
        rx = re.compile(f"^/{re.escape(service.id)}/" + "/".join(parts) + "$")
        table.append((rx, route.method, route))

    def match(method: str, path: str) -> object:
        partial = None
        for rx, route_method, route in table:
            m = rx.match(path)
            if m is not None:
                if route_method == method or route_method == "*":
                    return route, m.groupdict()
                if partial is None:
                    partial = route
        return partial

    return match


def time_batch(match: Matcher, requests: list[tuple[str, str]]) -> float:
    """Nanoseconds per match over one pass of the requests."""
    start = time.perf_counter_ns()
    for method, path in requests:
        match(method, path)
    return (time.perf_counter_ns() - start) / len(requests)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=101, help="batches timed per case")
    parser.add_argument("--batch", type=int, default=200, help="requests per batch")
    args = parser.parse_args(argv)

    rng = random.Random(4402)
    cases: dict[tuple[int, str], tuple[Matcher, list[tuple[str, str]]]] = {}
    for n in SIZES:
        service, samples = build(n)
        router, scan = Router.compile([service]), regex_scan(service)
        picked = [rng.choice(samples) for _ in range(args.batch)]
        for method, path, expected in picked:  # both sides answer the same before timing them
            result = router.match(method, path)
            assert isinstance(result, Match) and result.route is expected, (path, result)
            found = scan(method, path)
            assert isinstance(found, tuple) and found[0] is expected, path
        requests = [(method, path) for method, path, _ in picked]
        cases[n, "trie"] = (router.match, requests)
        cases[n, "scan"] = (scan, requests)

    # Short batches, every case once per repeat in a fresh random order: a time slice lost to
    # another process spoils few batches and lands on all cases alike, and the median drops it.
    # Each timed batch follows an untimed pass over the same requests, so that no case pays for
    # the caches the previous case (a 1,000-regex scan above all) left cold: steady state.
    runs: dict[tuple[int, str], list[float]] = {key: [] for key in cases}
    order = list(cases)
    for match, requests in cases.values():
        time_batch(match, requests)  # warm up
    gc.collect()
    gc.disable()
    try:
        for _ in range(args.repeats):
            rng.shuffle(order)
            for key in order:
                time_batch(*cases[key])
                runs[key].append(time_batch(*cases[key]))
    finally:
        gc.enable()
    med = {key: statistics.median(values) for key, values in runs.items()}
    low = {key: min(values) for key, values in runs.items()}

    print(f"router match cost in ns per request: median (min) of {args.repeats} batches")
    print(f"of {args.batch} requests, uniform over the routes")
    print(f"{'routes':>7} {'trie':>14} {'scan':>16} {'scan/trie':>10} {'trie/trie@10':>13}")
    base = med[SIZES[0], "trie"]
    for n in SIZES:
        trie, scan = med[n, "trie"], med[n, "scan"]
        print(
            f"{n:>7} {trie:>6.0f} ({low[n, 'trie']:>5.0f}) {scan:>7.0f} ({low[n, 'scan']:>6.0f}) "
            f"{scan / trie:>9.1f}x {trie / base:>12.2f}x"
        )
    n = SIZES[-1]
    ratio, flat = med[n, "scan"] / med[n, "trie"], med[n, "trie"] / base
    ok_ratio, ok_flat = ratio >= TARGET_SCAN_RATIO, flat <= TARGET_FLATNESS
    print(
        f"target scan/trie >= {TARGET_SCAN_RATIO:.0f}x at {n} routes: {ratio:.1f}x "
        f"{'PASS' if ok_ratio else 'FAIL'}"
    )
    print(
        f"target trie@{n} <= {TARGET_FLATNESS:.0f}x trie@10: {flat:.2f}x "
        f"{'PASS' if ok_flat else 'FAIL'}"
    )
    return 0 if ok_ratio and ok_flat else 1


if __name__ == "__main__":
    raise SystemExit(main())
