"""How a response body is read from a real loopback upstream: byte-exact, in the pieces the
socket gave (several large ones are never joined into one copy), and with reading paused while
more than the high-water mark waits unread."""

from __future__ import annotations

import asyncio

from mpp_proxy.core import upstream
from mpp_proxy.core.pool import UpstreamPool
from mpp_proxy.core.upstream import parse_origin

BODY = bytes(range(256)) * (6 * 4096)  # 6 MiB
READ_MAX = 256 * 1024  # what one socket read hands the protocol at most (asyncio and uvloop)


async def _serve_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    head = b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
    writer.write(head + b"content-length: %d\r\n\r\n" % len(BODY) + BODY)
    await writer.drain()
    await reader.read()  # until the client closes
    writer.close()


async def _download() -> tuple[list[int], list[int]]:
    """The sizes of the pieces read, and how much waited unread after each wait."""
    server = await asyncio.start_server(_serve_once, "127.0.0.1", 0)
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
    assert b"".join(pieces) == BODY
    pool.release(conn, reuse=False)
    await pool.close(grace=0)
    server.close()
    await server.wait_closed()
    return [len(p) for p in pieces], waiting


def test_a_large_body_is_read_byte_exact_in_the_pieces_received_with_bounded_buffering() -> None:
    sizes, waiting = asyncio.run(_download())
    # Bounded: reading paused once more than the high-water mark waited (plus the read that
    # crossed it), though the upstream wrote all 6 MiB at once.
    assert max(waiting) <= upstream._READ_HIGH_WATER + READ_MAX
    assert max(waiting) > upstream._JOIN_MAX  # the client was slow enough to let bytes pile up
    # Pieces that waited together beyond the join limit are handed on one at a time, as read.
    assert max(sizes) <= max(READ_MAX, upstream._JOIN_MAX)
    assert len(sizes) >= len(BODY) // READ_MAX
