"""Path confusion through the served proxy: a free route never reaches a paid upstream path.

Each target is sent as exact bytes through granian. Whatever reaches the upstream without a
payment is read the ways lax upstreams read paths (decoded once or twice, backslashes as
slashes, `;params` dropped, dot segments resolved, empty segments collapsed); none of those
readings may be the paid path.
"""

from __future__ import annotations

import posixpath
from urllib.parse import unquote

import pytest

from tests.security.wire import exchange, request
from tests.support.proxy_process import ProxyProcess
from tests.support.upstream import Upstream

# The upstream path of the paid route `* /openai/v1/chat/completions` (service base `/echo`).
PAID_UPSTREAM = "/echo/v1/chat/completions"
# Each test asks once: the server closes after answering, so reads end without a quiet wait.
CLOSE = "Connection: close"

TARGETS = [
    "/openai/v1/models/../chat/completions",
    "/openai/v1/models/x/../../chat/completions",
    "/openai/v1/models/./../chat/completions",
    "/openai/v1/models/%2e%2e/chat/completions",
    "/openai/v1/models/%2E%2E/chat/completions",
    "/openai/v1/models/.%2e/chat/completions",
    "/openai/v1/models/..%2Fchat%2Fcompletions",
    "/openai/v1/models/..%2fchat%2fcompletions",
    "/openai/v1/models/%252e%252e/chat/completions",
    "/openai/v1/models/%252E%252E/chat/completions",
    "/openai/v1/models/..%252Fchat%252Fcompletions",
    "/openai/v1/models/..%255Cchat%255Ccompletions",
    "/openai/v1/models/..\\chat\\completions",
    "/openai/v1/models/..%5Cchat%5Ccompletions",
    "/openai/v1/models//../chat/completions",
    "/openai//v1/chat/completions",
    "/openai/v1/models/..;/chat/completions",
    "/openai/v1/models/x/..;x=1/..;/chat/completions",
    "/openai/v1/models/.;/../chat/completions",
    "/openai/v1/models/%c0%ae%c0%ae/chat/completions",
    "/openai/v1/models/%00/../chat/completions",
    "/openai/v1/models/x%23/../../chat/completions",
    "/openai/v1/models/x?/../../chat/completions",
    "http://evil.example/openai/v1/models/../chat/completions",
    "http://evil.example/openai/v1/models/x",
    "//evil.example/openai/v1/chat/completions",
]


def lax_readings(path: str) -> set[str]:
    """The paths a lax upstream might route `path` (no query) to."""
    out: set[str] = set()
    decoded = [path, unquote(path), unquote(unquote(path))]
    for p in decoded:
        for q in (p, p.replace("\\", "/")):
            for r in (q, "/".join(seg.split(";", 1)[0] for seg in q.split("/"))):
                while "//" in r:
                    r = r.replace("//", "/")
                out.add(r)
                out.add(posixpath.normpath(r))
    return out


def test_lax_readings_catch_the_classic_tricks() -> None:
    tricks = ("/echo/v1/models/..;/chat/completions", "/echo/v1/models/%252e%252e/chat/completions")
    for trick in tricks:
        assert PAID_UPSTREAM in lax_readings(trick)
    assert PAID_UPSTREAM not in lax_readings("/echo/v1/models/gpt-4o")


@pytest.mark.parametrize("target", TARGETS)
def test_no_spelling_of_a_paid_path_reaches_the_upstream_through_a_free_route(
    target: str, gateway: ProxyProcess, upstream: Upstream
) -> None:
    before = upstream.requests
    result = exchange(gateway.port, request("GET", target, CLOSE))
    assert len(result.responses) == 1, result.raw[:1000]
    status = result.responses[0].status
    reached = upstream.requests - before
    if status == 200:
        assert reached == 1
        seen = result.responses[0].json()["path"]
        assert PAID_UPSTREAM not in lax_readings(seen), (target, seen)
    else:
        # Refused (400 bad path, 402 for the paid route itself, 404): the upstream saw nothing.
        assert status in (400, 402, 404), result.raw[:1000]
        assert reached == 0


def test_free_route_forwards_its_path_byte_for_byte(gateway: ProxyProcess) -> None:
    target = "/openai/v1/models/gpt-4o%3Amini;v=1"
    result = exchange(gateway.port, request("GET", target + "?a=%2e%2e/x", CLOSE))
    assert result.statuses == [200]
    doc = result.responses[0].json()
    assert (doc["path"], doc["query"]) == ("/echo/v1/models/gpt-4o%3Amini;v=1", "a=%2e%2e/x")


def test_absolute_form_target_is_routed_by_its_path_and_the_paid_route_stays_paid(
    gateway: ProxyProcess, upstream: Upstream
) -> None:
    before = upstream.requests
    target = "http://evil.example/openai/v1/chat/completions"
    result = exchange(gateway.port, request("POST", target, CLOSE))
    assert result.statuses in ([402], [400]), result.raw[:500]
    assert upstream.requests == before


@pytest.mark.parametrize(
    "host",
    [
        "Host: evil.example",
        "Host: 127.0.0.1/openai/v1/chat/completions",
        "Host: evil.example\r\nHost: other.example",
        "X-Forwarded-Host: evil.example\r\nX-Original-URL: /v1/chat/completions",
    ],
)
def test_host_header_tricks_never_change_the_upstream_host_or_path(
    host: str, gateway: ProxyProcess, upstream: Upstream
) -> None:
    lines = ["GET /openai/v1/models/x HTTP/1.1", host, "X-Rewrite-URL: /v1/chat/completions", CLOSE]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode()
    result = exchange(gateway.port, data)
    assert len(result.responses) == 1
    if result.responses[0].status != 200:
        assert result.responses[0].status == 400
        return
    doc = result.responses[0].json()
    assert doc["path"] == "/echo/v1/models/x"
    hosts = [v for k, v in doc["raw_headers"] if k.lower() == "host"]
    assert hosts == [upstream.url.removeprefix("http://")]
    names = {k.lower() for k, _ in doc["raw_headers"]}
    assert not names & {"x-forwarded-host", "forwarded"}
