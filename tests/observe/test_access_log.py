"""The JSON access log under `mpp-proxy serve`: one parsable line per request with the fields
an operator needs, payments included; never a secret; the query only when asked for."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from observe_harness import (
    METRICS_TOKEN,
    SECRETS,
    WEBHOOK_SECRET,
    Gateway,
    pay,
    wait_until,
    write_config,
)

from mpp_proxy import load_config
from mpp_proxy.observe.access_log import AccessLog
from mpp_proxy.observe.outcome import RouteStats, new_outcome
from tests.support.ports import free_port
from tests.support.upstream import Upstream

EXTRA = f"""
[proxy.metrics]
bearer_token = "{METRICS_TOKEN}"

[[proxy.webhooks]]
url = "http://127.0.0.1:{{hook}}/hooks"
secret = "{WEBHOOK_SECRET}"
"""
FIELDS = {
    "time",
    "request_id",
    "client",
    "method",
    "path",
    "service",
    "route",
    "status",
    "source",
    "bytes_in",
    "bytes_out",
    "duration_us",
    "upstream_us",
    "error",
}


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Gateway]:
    with Upstream() as up:
        # The webhook receiver is down: its failures are logged too, and must leak nothing.
        extra = EXTRA.format(hook=free_port())
        gw = Gateway.started(write_config(tmp_path, up.url, extra))
        try:
            yield gw
        finally:
            gw.stop()


def by_id(gw: Gateway, request_id: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        return next((line for line in gw.log_lines() if line["request_id"] == request_id), None)

    found: dict[str, Any] = wait_until(find, timeout=10)
    return found


def test_every_kind_of_answer_has_a_json_line_with_its_fields(gateway: Gateway) -> None:
    base = gateway.url
    with httpx.Client(timeout=10) as client:
        answers = {
            "free": client.get(
                base + "/svc/echo/free?api_key=hidden", headers={"x-request-id": "r-free"}
            ),
            "402": client.get(base + "/svc/echo/paid", headers={"x-request-id": "r-402"}),
            "paid": pay(client, base + "/svc/echo/paid", headers={"x-request-id": "r-paid"}),
            "404": client.get(base + "/nowhere", headers={"x-request-id": "r-404"}),
            "502": client.get(base + "/down/x", headers={"x-request-id": "r-502"}),
            "504": client.get(base + "/svc/sleep?s=3", headers={"x-request-id": "r-504"}),
            "released": pay(
                client, base + "/svc/status/paid/503", headers={"x-request-id": "r-release"}
            ),
            "credited": pay(
                client, base + "/svc/status/first/503", headers={"x-request-id": "r-credit"}
            ),
        }
    statuses = {k: r.status_code for k, r in answers.items()}
    assert statuses == {
        "free": 200,
        "402": 402,
        "paid": 200,
        "404": 404,
        "502": 502,
        "504": 504,
        "released": 503,
        "credited": 503,
    }
    for name, response in answers.items():
        line = by_id(gateway, response.headers["x-request-id"])
        assert set(line) >= FIELDS, (name, line)
        assert line["status"] == response.status_code
        assert line["client"] == "127.0.0.1"
        assert "?" not in line["path"] and "query" not in line
    free = by_id(gateway, "r-free")
    assert (free["service"], free["route"], free["source"]) == ("svc", "GET /echo/free", "upstream")
    assert free["path"] == "/svc/echo/free" and free["upstream_us"] > 0
    assert free["bytes_out"] == len(answers["free"].content)
    required = by_id(gateway, "r-402")
    assert (required["source"], required["problem"]) == ("proxy", "payment-required")
    paid = by_id(gateway, "r-paid")["payment"]
    assert paid["method"] == "play" and paid["amount"] == "0.01" and paid["currency"] == "TEST"
    assert paid["outcome"] == "delivered" and paid["reference"].startswith("test_")
    assert paid["payer"]
    assert by_id(gateway, "r-404")["service"] == ""
    assert by_id(gateway, "r-502")["error"] == "refused"
    assert by_id(gateway, "r-504")["error"] == "timeout"
    released = by_id(gateway, "r-release")
    assert released["problem"] == "payment-not-charged"
    assert released["payment"]["outcome"] == "released"
    assert released["payment"]["reason"] == "upstream-status"
    assert released["payment"]["reference"] == ""  # never settled
    credit = by_id(gateway, "r-credit")
    assert credit["payment"]["outcome"] == "credited"
    assert credit["payment"]["reason"] == "upstream-status"
    assert credit["payment"]["amount"] == "0.25"

    gateway.stop()
    output = gateway.output()
    assert "webhook delivery" in output  # the failing receiver was logged
    for secret in SECRETS:
        assert secret not in output, "a configured secret reached the log"


def test_log_query_keeps_the_query(tmp_path: Path) -> None:
    with Upstream() as up:
        gw = Gateway.started(write_config(tmp_path, up.url, "[proxy.log]\nlog_query = true\n"))
        try:
            r = httpx.get(gw.url + "/svc/echo/free?a=1&b=2", headers={"x-request-id": "q1"})
            assert r.status_code == 200
            assert by_id(gw, "q1")["query"] == "a=1&b=2"
        finally:
            gw.stop()


def _logged_client(folder: Path, extra: str, rid: str, forwarded: str) -> str:
    """The client a gateway configured with `extra` logs for a request with X-Forwarded-For."""
    folder.mkdir()
    with Upstream() as up:
        gw = Gateway.started(write_config(folder, up.url, extra))
        try:
            headers = {"x-request-id": rid, "x-forwarded-for": forwarded}
            assert httpx.get(gw.url + "/svc/echo/free", headers=headers).status_code == 200
            client: str = by_id(gw, rid)["client"]
            return client
        finally:
            gw.stop()


def test_behind_a_trusted_proxy_the_line_names_the_forwarded_client(tmp_path: Path) -> None:
    """The client address after trusted proxies; a hop list from an untrusted peer is not
    believed (the peer's address is logged)."""
    trusted = 'trusted_proxies = ["127.0.0.1/32"]\n'
    forwarded = "203.0.113.9, 127.0.0.1"
    assert _logged_client(tmp_path / "t", trusted, "xff1", forwarded) == "203.0.113.9"
    assert _logged_client(tmp_path / "u", "", "xff2", "203.0.113.9") == "127.0.0.1"


def test_text_format_and_access_off(tmp_path: Path) -> None:
    with Upstream() as up:
        text = tmp_path / "text"
        text.mkdir()
        gw = Gateway.started(write_config(text, up.url, '[proxy.log]\nformat = "text"\n'))
        try:
            httpx.get(gw.url + "/svc/echo/free", headers={"x-request-id": "t-1"})
            wait_until(lambda: " t-1 " in gw.streams()[0])
            line = next(x for x in gw.streams()[0].splitlines() if " t-1 " in x)
            assert '"GET /svc/echo/free" 200 upstream' in line
        finally:
            gw.stop()
        off = tmp_path / "off"
        off.mkdir()
        gw = Gateway.started(write_config(off, up.url, "[proxy.log]\naccess = false\n"))
        try:
            httpx.get(gw.url + "/svc/echo/free", headers={"x-request-id": "o-1"})
        finally:
            gw.stop()
        assert "o-1" not in gw.output()


def written(log: AccessLog, path: Path) -> list[str]:
    """What `log` wrote to the file at `path` (its fd) once flushed."""
    log.flush()
    return path.read_text().splitlines(keepends=True)


@pytest.mark.parametrize("path", ["/svc/echo/free", '/svc/echo/"quoted"', "/svc/echo/caf\u00e9"])
@pytest.mark.parametrize("upstream", [301, 7, None])
@pytest.mark.parametrize("duration", [412, 999, 1000, 61_001, 2_500_000])
def test_a_plain_line_says_exactly_what_the_full_line_says(
    tmp_path: Path, path: str, upstream: int | None, duration: int
) -> None:
    # Plain answers are written from a kept middle and an f-string, the rest through orjson:
    # the same outcome must read the same either way (and twice, once the middle is kept).
    out = tmp_path / "log"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT)
    log = AccessLog(load_config(str(write_config(tmp_path, "http://127.0.0.1:9"))), fd)
    stats = RouteStats("svc", "GET /echo/*")
    values = (stats, b"rid-1", "2001:db8::7", b"", "GET", path, 404, upstream is not None, 3, 250)
    o = new_outcome((*values, duration, upstream, None, time.perf_counter_ns()))
    full = json.loads(orjson.dumps(log.fields(o)))
    assert full["duration_us"] == duration
    assert full["upstream_us"] == upstream
    log.record(o)
    log.line((*values, duration, upstream), o.ended_ns)
    lines = written(log, out)
    os.close(fd)
    assert len(lines) == 2
    for line in lines:
        assert line.endswith("\n") and line.count("\n") == 1
        assert json.loads(line) == full


def test_line_times_are_the_wall_clock_times_to_the_millisecond(tmp_path: Path) -> None:
    # Lines wait in the buffer for the next flush, which spans seconds (every 0.5 s, longer
    # under load), and a line may end before the second the last one ended in: each line's
    # time is its own.
    out = tmp_path / "log"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT)
    log = AccessLog(load_config(str(write_config(tmp_path, "http://127.0.0.1:9"))), fd)
    stats = RouteStats("svc", "GET /echo/*")
    now = time.perf_counter_ns()
    steps = [0, 1, 999_999, 1_000_000, 999_000_000, 1_000_000_000, 2_700_000_123, -5_000_000_000]
    endings = [now + s for s in steps] + [now - 1, now + 86_400 * 10**9]
    plain = (stats, b"r", "127.0.0.1", b"", "GET", "/x", 200, True, 0, 1, 5, 3)
    log.line(plain, now)
    written(log, out)  # the first second is made; the flush reads the clock again
    for ended in endings:
        log.line(plain, ended)
    clock = log._clock
    lines = written(log, out)[1:]
    os.close(fd)
    for ended, line in zip(endings, lines, strict=True):
        ms = (ended + clock) // 1_000_000
        wall = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000))
        assert json.loads(line)["time"] == f"{wall}.{ms % 1000:03d}Z"
