"""Upstream client comparison (not a test): our codec-on-protocol pool vs httpcore connections.

    .venv/bin/python benchmarks/upstream_client.py [--requests 20000] [--concurrency 1 16 64]

Starts a granian hello-world upstream (uvloop, one worker), then for each client and concurrency
sends GET requests over keep-alive connections and prints requests/s and client CPU µs/request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpcore
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mpp_proxy.core.pool import UpstreamPool
from mpp_proxy.core.upstream import parse_origin

HELLO = """
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"27")]})
    await send({"type": "http.response.body", "body": b'{"choices": [{"text": "hi"}]}'[:27]})
"""

Fetch = Callable[[], Awaitable[int]]


def ours(url: str, conc: int) -> tuple[Fetch, Callable[[], Awaitable[None]]]:
    origin = parse_origin(url)
    pool = UpstreamPool(origin, max_connections=conc)
    headers = [(b"host", origin.host_header), (b"accept", b"*/*")]

    async def fetch() -> int:
        conn = await pool.acquire(5.0, 5.0)
        await conn.send_request(
            b"GET", origin.base_path + b"/v1/x", headers, b"", chunked=False, end=True, timeout=5.0
        )
        status, _ = await conn.read_head(5.0)
        n = 0
        while True:
            chunk, last = await conn.read_body(5.0)
            n += len(chunk)
            if last:
                break
        pool.release(conn, reuse=True)
        return status

    return fetch, pool.close


def httpcore_lifo(url: str, conc: int) -> tuple[Fetch, Callable[[], Awaitable[None]]]:
    origin = httpcore.Origin(b"http", b"127.0.0.1", int(url.rsplit(":", 1)[1]))
    idle: deque[httpcore.AsyncHTTPConnection] = deque()
    sem = asyncio.Semaphore(conc)
    full = url + "/v1/x"
    host = url.removeprefix("http://").encode()

    async def fetch() -> int:
        async with sem:
            conn = idle.pop() if idle else httpcore.AsyncHTTPConnection(origin)
            resp = await conn.handle_async_request(
                httpcore.Request("GET", full, headers=[(b"host", host), (b"accept", b"*/*")])
            )
            async for _ in resp.aiter_stream():  # type: ignore[union-attr]
                pass
            await resp.aclose()
            idle.append(conn)
            return resp.status

    async def close() -> None:
        while idle:
            await idle.pop().aclose()

    return fetch, close


def httpcore_pool(url: str, conc: int) -> tuple[Fetch, Callable[[], Awaitable[None]]]:
    pool = httpcore.AsyncConnectionPool(max_connections=conc)
    full = url + "/v1/x"

    async def fetch() -> int:
        resp = await pool.request("GET", full)
        return resp.status

    return fetch, pool.aclose


async def run(
    make: Callable[..., tuple[Fetch, Callable[[], Awaitable[None]]]],
    url: str,
    conc: int,
    total: int,
) -> tuple[float, float]:
    fetch, close = make(url, conc)
    for _ in range(200):
        await fetch()
    left = total

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            assert await fetch() == 200

    cpu0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(conc)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    await close()
    return total / wall, cpu / total * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    args = ap.parse_args()
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_hello_{os.getpid()}"
    tmp.mkdir(exist_ok=True)
    (tmp / "hello.py").write_text(HELLO)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    granian = Path(sys.executable).with_name("granian")
    proc = subprocess.Popen(
        [
            str(granian),
            "--interface",
            "asgi",
            "--loop",
            "uvloop",
            "--http",
            "1",
            "--workers",
            "1",
            "--port",
            str(port),
            "--log-level",
            "critical",
            "--no-access-log",
            "hello:app",
        ],
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        clients = {
            "ours (codec + asyncio protocol, LIFO pool)": ours,
            "httpcore AsyncHTTPConnection + LIFO deque": httpcore_lifo,
            "httpcore AsyncConnectionPool": httpcore_pool,
        }
        for conc in args.concurrency:
            for name, make in clients.items():
                total = args.requests if "Pool" not in name or conc < 32 else args.requests // 4
                rps, cpu_us = uvloop.run(run(make, url, conc, total))
                print(f"c={conc:<3} {name:<45} {rps:8.0f} req/s  {cpu_us:6.0f} µs CPU/req")
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
