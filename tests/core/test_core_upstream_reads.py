"""How a response body is read from a real loopback upstream: byte-exact, in the pieces the
socket gave (several large ones are never joined into one copy), and with reading paused while
more than the high-water mark waits unread."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from mpp_proxy.core import upstream
from mpp_proxy.core.pool import UpstreamPool
from mpp_proxy.core.upstream import parse_origin

BODY = bytes(range(256)) * (6 * 4096)  # 6 MiB
READ_MAX = 256 * 1024  # what one socket read hands the protocol at most (asyncio and uvloop)


SMALL = 100  # bytes per write when the body trickles in: 5,000 writes of an event's size
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\ncontent-length: %d\r\n\r\n"


async def _serve_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(HEAD % len(BODY) + BODY)
    await writer.drain()
    await reader.read()  # until the client closes
    writer.close()


async def _trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(HEAD % (len(BODY) // 12))
    for at in range(0, len(BODY) // 12, SMALL):
        writer.write(BODY[at : at + SMALL])
        await writer.drain()
        await asyncio.sleep(0)  # one write per loop turn: each arrives as a read of its own
    await reader.read()
    writer.close()


async def _download(
    serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> tuple[list[int], list[int]]:
    """The sizes of the pieces read, and how much waited unread after each wait."""
    served = asyncio.Event()  # the handler saw the client close and ended

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve(reader, writer)
        served.set()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = UpstreamPool(parse_origin(f"http://127.0.0.1:{port}"), max_connections=1)
    conn = await pool.acquire(5, 5)
    await conn.send_request(
        b"GET", b"/big", [(b"host", b"127.0.0.1")], b"", chunked=False, end=True, timeout=5
    )
    assert (await conn.read_head(5))[0] == 200
    pieces: list[bytes] = []
    waiting: list[int] = []
    while True:
        await asyncio.sleep(0.05)  # a slow client: the upstream's bytes pile up meanwhile
        waiting.append(conn._ch._size)
        got = conn.read_body_now() or await conn.read_body(5)
        pieces.append(got[0])
        if got[1]:
            break
    assert BODY.startswith(b"".join(pieces))
    pool.release(conn, reuse=False)
    await pool.close(grace=0)
    await asyncio.wait_for(served.wait(), 5)
    server.close()
    await server.wait_closed()
    return [len(p) for p in pieces], waiting


def test_a_large_body_is_read_byte_exact_in_the_pieces_received_with_bounded_buffering() -> None:
    sizes, waiting = asyncio.run(_download(_serve_once))
    assert sum(sizes) == len(BODY)
    # Bounded: reading paused once more than the high-water mark waited (plus the read that
    # crossed it), though the upstream wrote all 6 MiB at once.
    assert max(waiting) <= upstream._READ_HIGH_WATER + READ_MAX
    assert max(waiting) > upstream._JOIN_MAX  # the client was slow enough to let bytes pile up
    # Pieces that waited together beyond the join limit are handed on one at a time, as read.
    assert max(sizes) <= max(READ_MAX, upstream._JOIN_MAX)
    assert len(sizes) >= len(BODY) // READ_MAX


def test_many_small_reads_that_wait_together_are_handed_on_joined_up_to_64_kib() -> None:
    sizes, waiting = asyncio.run(_download(_trickle))
    assert sum(sizes) == len(BODY) // 12
    assert max(waiting) > 2 * upstream._JOIN_MAX  # the trickle piled up while the client slept
    # (The first piece is what came with the head.)
    joined = [size for size, waited in zip(sizes, waiting, strict=True) if waited > 70_000][1:]
    assert joined and all(upstream._JOIN_MAX // 2 < size <= upstream._JOIN_MAX for size in joined)
