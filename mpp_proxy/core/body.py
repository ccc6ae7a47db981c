"""The request body as it arrives from the server: one receive loop, one limit, one timeout."""

from __future__ import annotations

import asyncio

from mpp_proxy.core.errors import BodyTooLarge, ClientGone, ClientStalled
from mpp_proxy.core.types import Message, Receive
from mpp_proxy.core.upstream import UpstreamConnection


class RequestBody:
    """Counts what a client sent against the route's limit.

    Our server has no timeout for request bodies: each wait is bounded by the service's write
    timeout here, or a client that stops sending mid-body would hold its task, buffer and
    upstream connection for good.
    """

    __slots__ = ("_receive", "limit", "received", "timeout")

    def __init__(self, receive: Receive, limit: int, timeout: float) -> None:
        self._receive = receive
        self.limit = limit
        self.timeout = timeout
        self.received = 0

    async def next(self) -> tuple[bytes, bool]:
        """(the next chunk, whether more follow). Raises ClientGone, ClientStalled,
        BodyTooLarge."""
        try:
            async with asyncio.timeout(self.timeout):
                message: Message = await self._receive()
        except TimeoutError:
            raise ClientStalled(self.timeout) from None
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk: bytes = message.get("body", b"")
        self.received += len(chunk)
        if self.received > self.limit:
            raise BodyTooLarge(self.limit)
        return chunk, message.get("more_body", False)

    async def rest(self, first: bytes) -> bytes:
        """The whole body, starting with `first` (bounded by the limit)."""
        parts = [first]
        more = True
        while more:
            chunk, more = await self.next()
            parts.append(chunk)
        return b"".join(parts)

    async def discard(self) -> None:
        """Read the rest of the body and drop it (a request that will not be forwarded)."""
        more = True
        while more:
            _, more = await self.next()

    async def stream_to(self, conn: UpstreamConnection) -> None:
        """Forward the remaining chunks to the upstream as they arrive, then end the body."""
        while True:
            chunk, more = await self.next()
            await conn.send_body(chunk, self.timeout)
            del chunk  # not held while the next one is awaited
            if not more:
                await conn.end_body(self.timeout)
                return
