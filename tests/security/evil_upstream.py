"""An upstream that answers with exact, hostile bytes (split headers, double framing, bad chunks).

`EvilUpstream.answers[path]` is the raw response sent for a request to that path (the request's
head and content-length body are read first), or a list of pieces sent `PAUSE` apart; the
connection then stays open for the next request, so a proxy that reuses it would meet any bytes
left over. Unknown paths get a clean
`200` with body `plain`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

# Between the pieces of an answer given as a list, so the proxy forwards the first ones first.
PAUSE = 0.2
PLAIN = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\nplain"


class EvilUpstream:
    def __init__(self, answers: dict[str, bytes | list[bytes]]) -> None:
        self.answers = answers
        self.port = 0
        self.requests: list[str] = []
        self.connections_total = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="evil-upstream", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections_total += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                target = lines[0].split(b" ")[1].decode("latin-1")
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                self.requests.append(target)
                answer = self.answers.get(target.partition("?")[0], PLAIN)
                for i, piece in enumerate([answer] if isinstance(answer, bytes) else answer):
                    if i:
                        await asyncio.sleep(PAUSE)
                    writer.write(piece)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop

        async def boot() -> None:
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
            self._ready.set()

        loop.run_until_complete(boot())
        loop.run_forever()
        loop.close()

    def __enter__(self) -> EvilUpstream:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("evil upstream did not start")
        return self

    def __exit__(self, *exc: object) -> None:
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
        self._thread.join(5)
