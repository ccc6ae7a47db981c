"""The per-request fast paths keep the same answers: bodyless HTTP/1 requests, buffered bodies."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from core_harness import config, service

from mpp_proxy.core import Proxy
from tests.support.upstream import Upstream


def _scope(http_version: str, path: str = "/up/echo") -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": http_version,
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"proxy.test"), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 5555),
        "server": ("127.0.0.1", 8000),
    }


async def _call(app: Proxy, scope: dict[str, Any], receive: Any) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app.startup()
    try:
        await asyncio.wait_for(app(scope, receive, send), 10)
    finally:
        await app.shutdown()
    return sent


def test_bodyless_http1_get_is_forwarded_without_reading_the_request_body(
    upstream: Upstream,
) -> None:
    # No content-length, no chunked: HTTP/1.1 says the body is empty; a server that never
    # answers receive() (until the client leaves) does not hold the request up.
    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    app = Proxy(config(service("up", upstream.url)))
    sent = asyncio.run(_call(app, _scope("1.1"), receive))
    assert sent[0]["status"] == 200
    body = b"".join(m.get("body", b"") for m in sent[1:])
    assert orjson.loads(body)["method"] == "GET"
    assert not sent[-1].get("more_body", False)


def test_http2_get_still_reads_the_body_it_may_carry(upstream: Upstream) -> None:
    calls: list[str] = []

    async def receive() -> dict[str, Any]:
        calls.append("receive")
        if len(calls) == 1:
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    app = Proxy(config(service("up", upstream.url)))
    sent = asyncio.run(_call(app, _scope("2"), receive))
    assert sent[0]["status"] == 200
    assert calls[:1] == ["receive"]
