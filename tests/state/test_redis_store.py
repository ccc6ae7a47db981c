"""The Redis store when the connection drops after a write ran: redis-py's retry must not lie."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from state_support import CREDITED, DELIVERED, IN_FLIGHT, payment

from mpp_proxy.state import Store, open_store


class ReplyDropper:
    """A loopback TCP relay to Redis that can swallow one reply and cut that connection.

    Armed, the next bytes Redis sends back are dropped and the client's connection is closed:
    the command ran on the server, but the client sees a connection error and retries.
    """

    def __init__(self, redis_port: int) -> None:
        self.redis_port = redis_port
        self.armed = False
        self.dropped = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _relay(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        s_reader, s_writer = await asyncio.open_connection("127.0.0.1", self.redis_port)

        async def upstream() -> None:
            while data := await c_reader.read(65536):
                s_writer.write(data)
                await s_writer.drain()
            s_writer.close()

        async def downstream() -> None:
            while data := await s_reader.read(65536):
                if self.armed:
                    self.armed = False
                    self.dropped += 1
                    c_writer.transport.abort()
                    s_writer.close()
                    return
                c_writer.write(data)
                await c_writer.drain()
            c_writer.close()

        await asyncio.gather(upstream(), downstream(), return_exceptions=True)


def through_dropper(redis_port: int, body: Callable[[Store, ReplyDropper], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        dropper = ReplyDropper(redis_port)
        port = await dropper.start()
        store = open_store(f"redis://127.0.0.1:{port}/0?key_prefix=drop-{id(dropper)}:")
        await store.open()
        try:
            # Load every script and warm the connection before any reply is dropped.
            await store.insert_payment(payment("warm", status=CREDITED, owner=""))
            await store.transition("warm", expect=(CREDITED,), status=IN_FLIGHT, owner="w")
            await store.put_if_absent("warm", 1)
            return await body(store, dropper)
        finally:
            await store.close()
            await dropper.close()

    return asyncio.run(main())


def test_retried_transition_reports_its_own_success(redis_port: int) -> None:
    async def body(store: Store, dropper: ReplyDropper) -> None:
        await store.insert_payment(payment("k1"))
        dropper.armed = True
        row = await store.transition("k1", expect=(IN_FLIGHT,), status=DELIVERED, owner="")
        assert dropper.dropped == 1
        assert row is not None and row.status is DELIVERED
        # A genuinely second transition still fails.
        assert await store.transition("k1", expect=(IN_FLIGHT,), status=DELIVERED) is None

    through_dropper(redis_port, body)


def test_retried_insert_reports_inserted(redis_port: int) -> None:
    async def body(store: Store, dropper: ReplyDropper) -> None:
        dropper.armed = True
        assert await store.insert_payment(payment("k1")) is None
        assert dropper.dropped == 1
        assert await store.insert_payment(payment("k1", owner="other")) == payment("k1")

    through_dropper(redis_port, body)


def test_retried_put_if_absent_reports_claimed(redis_port: int) -> None:
    async def body(store: Store, dropper: ReplyDropper) -> None:
        dropper.armed = True
        assert await store.put_if_absent("tx", "0xabc") is True
        assert dropper.dropped == 1
        assert await store.put_if_absent("tx", "0xabc") is False
        assert await store.get("tx") == "0xabc"

    through_dropper(redis_port, body)
