"""Ceiling: the least an ASGI app can do under granian, answering the upstream's bodies itself.

Served with mpp-proxy's own granian flags (`granian ... benchmarks.peers.granian_fixed:app`), it
answers GET ~/small, ~/64k and ~/big with the bytes the nginx upstream serves, every message
built once at import: what is left is granian's and the event loop's cost per request, the
ceiling any ASGI proxy on granian can reach.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from benchmarks.nginx import FIXED_GETS

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _answer(status: int, content_type: str, body: bytes) -> tuple[Message, Message]:
    headers = [(b"content-type", content_type.encode()), (b"content-length", b"%d" % len(body))]
    start = {"type": "http.response.start", "status": status, "headers": headers}
    return start, {"type": "http.response.body", "body": body, "more_body": False}


ANSWERS = {path: _answer(200, kind, body) for path, (kind, body) in FIXED_GETS.items()}
NOT_FOUND = _answer(404, "text/plain", b"not found\n")


async def app(scope: Message, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path: str = scope["path"]
    start, body = ANSWERS.get(path[path.rfind("/") :], NOT_FOUND)
    await send(start)
    await send(body)
