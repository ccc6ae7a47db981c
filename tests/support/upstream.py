"""A loopback test upstream (h11 on asyncio) with echo, status, SSE, big bodies, sleeps and resets.

Use it in a thread:

    with Upstream() as up:            # Upstream(tls=server_ssl_context) for HTTPS
        up.url                        # "http://127.0.0.1:<port>"
        up.connections_total          # TCP connections accepted so far
        up.connections_open           # currently open

or in its own process (`python -m tests.support.upstream` prints `PORT <n>`), see `spawn_upstream`.

Endpoints (method-agnostic):
  /echo...                    JSON {method, path, query, headers [[name, value]], body, body_len,
                              body_sha256}; `body` is latin-1 text of the first 64 KiB
  /status/<code>              that status, JSON body; `?body=text` sends text instead
  /sse?n=5&interval=0.05      text/event-stream (chunked), one `data: <i>` event per interval
  /bytes?n=<bytes>            `pattern(n)` with content-length; `&chunked=1` for chunked;
                              `&chunk=<size>` write size (default 256 KiB)
  /sleep?s=2                  sleeps, then 200 JSON; `&body=1` sleeps after sending the head
  /reset-mid-body?n=&sent=    declares n bytes (default 1 MB), sends `sent` (default 64 KiB),
                              then resets the TCP connection
  /response-headers?k=v&...   200 with each query pair added as a response header
  /close                      200 with `Connection: close`
  /fail-once?key=k            503 the first time a key is seen, 200 JSON afterwards
  /drop-if-reused             200 on a connection's first request; later ones: closed unanswered
  /garbage                    answers bytes that are not HTTP
  /reject-upload              answers 401 without reading the request body, then closes
  /stats                      JSON {connections_total, connections_open, requests}
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl

import h11
import orjson

_BLOCK = hashlib.sha256(b"mpp-proxy").digest() * 8192 + bytes(range(256))  # 256 KiB + 256 B
_ECHO_KEEP = 64 * 1024


def pattern(n: int, offset: int = 0) -> bytes:
    """The deterministic body `/bytes?n=` serves (not periodic on any power of two)."""
    out = bytearray()
    pos = offset
    size = len(_BLOCK)
    while len(out) < n:
        start = pos % size
        take = min(size - start, n - len(out))
        out += _BLOCK[start : start + take]
        pos += take
    return bytes(out)


def _pattern_chunks(n: int, chunk: int) -> Iterator[bytes]:
    sent = 0
    while sent < n:
        take = min(chunk, n - sent)
        yield pattern(take, sent)
        sent += take


class _Stats:
    def __init__(self) -> None:
        self.connections_total = 0
        self.connections_open = 0
        self.requests = 0
        self.body_bytes = 0  # request body bytes received, counted as they arrive
        self.failed_keys: set[str] = set()


async def _serve_connection(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stats: _Stats
) -> None:
    stats.connections_total += 1
    stats.connections_open += 1
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=256 * 1024)
    index = 0
    try:
        while True:
            request, body_len, digest, kept = await _read_request(conn, reader, stats)
            if request is None:
                return
            stats.requests += 1
            index += 1
            if request.target.startswith(b"/drop-if-reused") and index > 1:
                return
            if request.target.startswith(b"/reject-upload"):
                await _reject_upload(writer)
                return
            if request.target.startswith(b"/garbage"):
                writer.write(b"NOT HTTP AT ALL\r\n\r\n")
                await writer.drain()
                return
            keep = await _respond(conn, writer, request, body_len, digest, kept, stats)
            if not keep:
                return
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            conn.start_next_cycle()
    except (
        ConnectionError,
        h11.ProtocolError,
        asyncio.IncompleteReadError,
        asyncio.CancelledError,
    ):
        return
    finally:
        stats.connections_open -= 1
        with contextlib.suppress(Exception):
            writer.close()


async def _read_request(
    conn: h11.Connection, reader: asyncio.StreamReader, stats: _Stats
) -> tuple[h11.Request | None, int, str, bytes]:
    request: h11.Request | None = None
    sha = hashlib.sha256()
    size = 0
    kept = bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            data = await reader.read(256 * 1024)
            conn.receive_data(data)
            continue
        if isinstance(event, h11.Request):
            request = event
            if event.target.startswith(b"/reject-upload"):
                return request, 0, "", b""
        elif isinstance(event, h11.Data):
            sha.update(event.data)
            size += len(event.data)
            stats.body_bytes += len(event.data)
            if len(kept) < _ECHO_KEEP:
                kept += event.data[: _ECHO_KEEP - len(kept)]
        elif isinstance(event, h11.EndOfMessage):
            return request, size, sha.hexdigest(), bytes(kept)
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None, 0, "", b""


async def _reject_upload(writer: asyncio.StreamWriter) -> None:
    body = b'{"error":"no"}'
    writer.write(
        b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n"
        b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    )
    await writer.drain()
    # Half-close, let the answer arrive, then drop the connection with the body unread.
    with contextlib.suppress(OSError):
        writer.write_eof()
    await asyncio.sleep(0.2)
    writer.transport.abort()


async def _send(conn: h11.Connection, writer: asyncio.StreamWriter, event: Any) -> None:
    data = conn.send(event)
    if data:
        writer.write(data)
        await writer.drain()


async def _respond(
    conn: h11.Connection,
    writer: asyncio.StreamWriter,
    request: h11.Request,
    body_len: int,
    digest: str,
    kept: bytes,
    stats: _Stats,
) -> bool:
    """Answer one request; False when the connection must end now."""
    target = request.target.decode("latin-1")
    path, _, query = target.partition("?")
    params = dict(parse_qsl(query, keep_blank_values=True))
    head = request.method == b"HEAD"

    async def simple(status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
        hs = [*headers, (b"content-length", str(len(body)).encode())]
        await _send(conn, writer, h11.Response(status_code=status, headers=hs))
        if body and not head:
            await _send(conn, writer, h11.Data(data=body))
        await _send(conn, writer, h11.EndOfMessage())
        return True

    json_type = [(b"content-type", b"application/json")]
    if path.startswith("/echo"):
        doc = {
            "method": request.method.decode(),
            "path": path,
            "query": query,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers],
            "raw_headers": [
                [k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers.raw_items()
            ],
            "body": kept.decode("latin-1"),
            "body_len": body_len,
            "body_sha256": digest,
        }
        return await simple(200, orjson.dumps(doc), json_type)
    if path.startswith("/status/"):
        code = int(path.rsplit("/", 1)[1])
        text = params.get("body")
        body = text.encode() if text is not None else orjson.dumps({"status": code})
        return await simple(code, body, json_type)
    if path == "/sse":
        n = int(params.get("n", "5"))
        interval = float(params.get("interval", "0.05"))
        await _send(
            conn,
            writer,
            h11.Response(
                status_code=200,
                headers=[(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
            ),
        )
        for i in range(n):
            if i:
                await asyncio.sleep(interval)
            await _send(conn, writer, h11.Data(data=b"data: %d\n\n" % i))
        await _send(conn, writer, h11.EndOfMessage())
        return True
    if path == "/bytes":
        n = int(params.get("n", "1024"))
        chunk = int(params.get("chunk", str(256 * 1024)))
        headers = [(b"content-type", b"application/octet-stream")]
        if params.get("chunked") != "1":
            headers.append((b"content-length", str(n).encode()))
        await _send(conn, writer, h11.Response(status_code=200, headers=headers))
        if not head:
            for piece in _pattern_chunks(n, chunk):
                await _send(conn, writer, h11.Data(data=piece))
        await _send(conn, writer, h11.EndOfMessage())
        return True
    if path == "/sleep":
        seconds = float(params.get("s", "1"))
        if params.get("body") == "1":
            await _send(
                conn,
                writer,
                h11.Response(status_code=200, headers=[(b"content-length", b"2")]),
            )
            await asyncio.sleep(seconds)
            await _send(conn, writer, h11.Data(data=b"ok"))
            await _send(conn, writer, h11.EndOfMessage())
            return True
        await asyncio.sleep(seconds)
        return await simple(200, b'{"slept":true}', json_type)
    if path == "/reset-mid-body":
        n = int(params.get("n", "1000000"))
        sent = int(params.get("sent", str(64 * 1024)))
        await _send(
            conn,
            writer,
            h11.Response(status_code=200, headers=[(b"content-length", str(n).encode())]),
        )
        await _send(conn, writer, h11.Data(data=pattern(sent)))
        await asyncio.sleep(0.05)
        sock = writer.get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        return False
    if path == "/response-headers":
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in parse_qsl(query)]
        return await simple(200, b"ok", headers)
    if path == "/fail-once":
        key = params.get("key", "")
        if key not in stats.failed_keys:
            stats.failed_keys.add(key)
            return await simple(503, b'{"error":"try again"}', json_type)
        return await simple(200, b'{"ok":true}', json_type)
    if path == "/drop-if-reused":
        return await simple(200, b"fresh", [])
    if path == "/close":
        return await simple(200, b"bye", [(b"connection", b"close")])
    if path == "/stats":
        doc = {
            "connections_total": stats.connections_total,
            "connections_open": stats.connections_open,
            "requests": stats.requests,
        }
        return await simple(200, orjson.dumps(doc), json_type)
    return await simple(404, b'{"error":"no such test endpoint"}', json_type)


class Upstream:
    """The test upstream running on its own event loop in a daemon thread."""

    def __init__(self, *, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.tls = tls
        self.port = 0
        self._stats = _Stats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def connections_total(self) -> int:
        return self._stats.connections_total

    @property
    def connections_open(self) -> int:
        return self._stats.connections_open

    @property
    def requests(self) -> int:
        return self._stats.requests

    @property
    def body_bytes(self) -> int:
        return self._stats.body_bytes

    def start(self) -> Upstream:
        self._thread = threading.Thread(target=self._run, name="test-upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("test upstream did not start")
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await _serve_connection(r, w, self._stats)

        async def boot() -> None:
            self._server = await asyncio.start_server(
                handle, self.host, 0, ssl=self.tls, limit=256 * 1024
            )
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()

        loop.run_until_complete(boot())
        loop.run_forever()
        loop.close()

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()
            loop.call_soon(loop.stop)

        asyncio.run_coroutine_threadsafe(shutdown(), loop)
        if self._thread is not None:
            self._thread.join(5)

    def wait_until(self, condition: Callable[[Upstream], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition(self):
                return True
            time.sleep(0.01)
        return condition(self)

    def __enter__(self) -> Upstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def spawn_upstream() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The test upstream in its own process (uvloop): yields (url, process)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.upstream"],
        cwd=root,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            raise RuntimeError(f"test upstream did not start: {line!r}")
        yield f"http://127.0.0.1:{int(line.split()[1])}", proc
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _main() -> None:
    stats = _Stats()

    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await _serve_connection(r, w, stats)

    async def serve() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, limit=256 * 1024)
        port = server.sockets[0].getsockname()[1]
        sys.stdout.write(f"PORT {port}\n")
        sys.stdout.flush()
        async with server:
            await server.serve_forever()

    try:
        import uvloop
    except ImportError:
        asyncio.run(serve())
    else:
        uvloop.run(serve())


if __name__ == "__main__":
    _main()
