"""Peer: the naive reverse proxy of Starlette + httpx docs (StreamingResponse over client.send)."""

from __future__ import annotations

import os

import httpx
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)

# uvicorn imports this module by name, so the upstream comes from the environment.
client = httpx.AsyncClient(base_url=os.environ["PEER_UPSTREAM"])


async def proxy(request: Request) -> StreamingResponse:
    url = httpx.URL(path=request.url.path, query=request.url.query.encode("utf-8"))
    headers = [(k, v) for k, v in request.headers.raw if k.decode().lower() not in HOP_BY_HOP]
    upstream_request = client.build_request(
        request.method, url, headers=headers, content=request.stream()
    )
    upstream = await client.send(upstream_request, stream=True)
    return StreamingResponse(
        upstream.aiter_raw(),
        status_code=upstream.status_code,
        headers={k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP},
        background=BackgroundTask(upstream.aclose),
    )


app = Starlette(
    routes=[Route("/{path:path}", proxy, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])]
)
