"""Peer: a reverse proxy in aiohttp (aiohttp.web server + one shared ClientSession), on uvloop."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import uvloop
from aiohttp import ClientSession, TCPConnector, web

# Hop-by-hop headers are per connection (RFC 9110 7.6.1) and never forwarded.
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
        "content-length",
    }
)

SESSION = web.AppKey("session", ClientSession)
UPSTREAM = web.AppKey("upstream", str)


async def client_session(app: web.Application) -> AsyncIterator[None]:
    # One session for the app's lifetime, as the aiohttp client docs recommend.
    async with ClientSession(connector=TCPConnector(limit=100), auto_decompress=False) as session:
        app[SESSION] = session
        yield


async def proxy(request: web.Request) -> web.StreamResponse:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    body = request.content if request.body_exists else None
    url = request.app[UPSTREAM] + request.path_qs
    async with request.app[SESSION].request(
        request.method, url, headers=headers, data=body, allow_redirects=False
    ) as upstream:
        response = web.StreamResponse(
            status=upstream.status,
            headers={k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP},
        )
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="http://127.0.0.1:PORT")
    args = parser.parse_args()
    app = web.Application()
    app[UPSTREAM] = args.upstream.rstrip("/")
    app.cleanup_ctx.append(client_session)
    app.router.add_route("*", "/{tail:.*}", proxy)
    web.run_app(
        app, host="127.0.0.1", port=args.port, access_log=None, loop=uvloop.new_event_loop()
    )


if __name__ == "__main__":
    main()
