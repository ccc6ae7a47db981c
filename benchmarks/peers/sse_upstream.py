"""The SSE upstream: streams N server-sent events, one write per event, over keep-alive HTTP/1.1.

nginx can only send a fixed file in one go, which would not exercise a proxy's per-chunk path,
so this small uvloop protocol server writes each event as its own chunk of a chunked response.
"""

from __future__ import annotations

import argparse
import asyncio

import uvloop

HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream\r\n"
    b"cache-control: no-cache\r\n"
    b"x-accel-buffering: no\r\n"
    b"transfer-encoding: chunked\r\n\r\n"
)
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, events: int) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line = head.split(b"\r\n", 1)[0]
            # Bodies are not expected; a chunked empty body (httpx streams one) is drained.
            if b"transfer-encoding: chunked" in head.lower():
                await reader.readuntil(b"0\r\n\r\n")
            target = request_line.split(b" ")[1]
            if not target.split(b"?", 1)[0].endswith(b"/sse"):
                writer.write(NOT_FOUND)
                continue
            writer.write(HEAD)
            for i in range(events):
                writer.write(chunk(b'data: {"n":%d,"text":"token"}\n\n' % i))
                # Yield so each event leaves in its own write, like a model streaming tokens.
                await writer.drain()
                await asyncio.sleep(0)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(port: int, events: int) -> None:
    server = await asyncio.start_server(
        lambda r, w: handle(r, w, events), "127.0.0.1", port, backlog=1024
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--events", type=int, default=1000)
    args = parser.parse_args()
    uvloop.run(serve(args.port, args.events))


if __name__ == "__main__":
    main()
