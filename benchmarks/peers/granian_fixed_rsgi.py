"""The fixed-response ceiling on granian's RSGI interface, beside the ASGI one.

`granian --interface rsgi benchmarks.peers.granian_fixed_rsgi:app` answers the same GETs with
the same bytes as `granian_fixed` (ASGI), every header list built once at import: the
difference between the two is what the server interface alone costs per request. `echo` (on
either interface, see `benchmarks.interfaces`) answers with what the app was handed: the path
and the headers of the request, as JSON.
"""

from __future__ import annotations

import json
from typing import Any

from benchmarks.nginx import FIXED_GETS

Answer = tuple[int, list[tuple[str, str]], bytes]


def _answer(status: int, content_type: str, body: bytes) -> Answer:
    return status, [("content-type", content_type), ("content-length", str(len(body)))], body


ANSWERS = {path: _answer(200, kind, body) for path, (kind, body) in FIXED_GETS.items()}
NOT_FOUND = _answer(404, "text/plain", b"not found\n")


async def app(scope: Any, proto: Any) -> None:
    path: str = scope.path
    status, headers, body = ANSWERS.get(path[path.rfind("/") :], NOT_FOUND)
    proto.response_bytes(status, headers, body)


async def echo(scope: Any, proto: Any) -> None:
    """RSGI: the path and headers as granian hands them to an RSGI app."""
    seen = {"path": scope.path, "headers": [list(h) for h in scope.headers.items()]}
    proto.response_bytes(200, [("content-type", "application/json")], json.dumps(seen).encode())


async def echo_asgi(scope: Any, receive: Any, send: Any) -> None:
    """ASGI: the same, from the scope granian builds for an ASGI app (raw_path as latin-1)."""
    if scope["type"] != "http":
        return
    seen = {
        "path": scope["raw_path"].decode("latin-1"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
    }
    body = json.dumps(seen).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})
