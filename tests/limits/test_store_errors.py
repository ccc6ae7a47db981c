"""When the store that counts limits fails: paid routes refuse (503, nothing charged), free
routes let requests through, unless on_store_error says otherwise."""

from __future__ import annotations

import socket
from pathlib import Path

from limits_support import PAID, pay, proxy_toml, serving

from tests.support.redis_server import redis_server
from tests.support.upstream import Upstream

LIMIT = 'limits = [{ rate = "100/minute" }]'


def test_with_redis_down_paid_routes_refuse_and_free_routes_pass_by_default(
    tmp_path: Path, upstream: Upstream
) -> None:
    routes = "\n".join(
        [
            f'"GET /echo/paid" = {{ {PAID}, {LIMIT} }}',
            f'"GET /echo/free" = {{ {LIMIT} }}',
            f'"GET /echo/free-closed" = {{ {LIMIT}, on_store_error = "closed" }}',
            f'"GET /echo/paid-open" = {{ {PAID}, {LIMIT}, on_store_error = "open" }}',
        ]
    )
    with redis_server() as port:
        text = proxy_toml(routes, url=upstream.url, state=f"redis://127.0.0.1:{port}/0")
        with serving(tmp_path, text) as (_, client):
            credential = pay(client, "/api/echo/paid")
            open_credential = pay(client, "/api/echo/paid-open")
            assert client.get("/api/echo/free").status_code == 200
            stop_redis(port)

            refused = client.get("/api/echo/paid", headers={"Authorization": credential})
            assert refused.status_code == 503, refused.text
            assert refused.json()["type"].endswith("/limits-unavailable")
            assert int(refused.headers["retry-after"]) >= 1
            assert client.get("/api/echo/free-closed").status_code == 503
            # Open: counted by nobody, so no RateLimit fields either.
            free = client.get("/api/echo/free")
            assert free.status_code == 200
            assert "ratelimit" not in free.headers
            # A paid route set open still needs the ledger, which lives in the same Redis:
            # the payment is refused by the gate, not by the limit.
            r = client.get("/api/echo/paid-open", headers={"Authorization": open_credential})
            assert r.status_code == 500
            assert not r.json()["type"].endswith("/limits-unavailable")


def stop_redis(port: int) -> None:
    """Ask the server to shut down (it is ours); its context manager then finds it gone."""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"SHUTDOWN NOSAVE\r\n")
        sock.recv(64)
