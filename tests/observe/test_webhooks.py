"""Webhooks: signed deliveries to a real receiver on loopback, at least once through the
store's outbox: a receiver that was down gets every event once it is up (each id once), and
events queued before a kill -9 are sent by the restarted server."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from observe_harness import WEBHOOK_SECRET, Gateway, pay, wait_until, write_config

from mpp_proxy import Proxy, load_config
from mpp_proxy.observe.webhooks import verify
from mpp_proxy.state.sqlite import SQLiteStore
from tests.cli.cli_harness import free_port
from tests.support.served import Served
from tests.support.upstream import Upstream

HOOK = """
[[proxy.webhooks]]
url = "http://127.0.0.1:{port}/hooks/mpp"
secret = "{secret}"
{events}
"""


class Receiver:
    """A webhook receiver on loopback that checks signatures the way an operator would."""

    def __init__(self, port: int = 0) -> None:
        self.received: list[dict[str, Any]] = []
        self.bad_signatures = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                header = self.headers["Mpp-Signature"] or ""
                if not _stripe_style_check(WEBHOOK_SECRET, body, header):
                    receiver.bad_signatures += 1
                    self.send_response(400)
                    self.end_headers()
                    return
                receiver.received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def ids(self) -> list[str]:
        return [e["id"] for e in self.received]


def _stripe_style_check(secret: str, body: bytes, header: str) -> bool:
    """Verification as the README shows it, written independently of our own verify()."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    signed = parts["t"].encode() + b"." + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    fresh = abs(time.time() - int(parts["t"])) < 300
    return fresh and hmac.compare_digest(expected, parts["v1"])


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


def hooked(tmp_path: Path, upstream: Upstream, port: int, events: str = "") -> Path:
    extra = HOOK.format(port=port, secret=WEBHOOK_SECRET, events=events)
    return write_config(tmp_path, upstream.url, extra)


def test_money_events_are_delivered_signed(tmp_path: Path, upstream: Upstream) -> None:
    receiver = Receiver()
    try:
        app = Proxy(load_config(str(hooked(tmp_path, upstream, receiver.port))))
        with Served(app) as s, httpx.Client() as client:
            assert (
                pay(client, s.url + "/svc/echo/paid", {"x-request-id": "wh-1"}).status_code == 200
            )
            assert pay(client, s.url + "/svc/status/paid/502").status_code == 502
            client.get(s.url + "/svc/echo/free")
            wait_until(lambda: len(receiver.received) == 3, timeout=15)
        assert receiver.bad_signatures == 0
        by_type = {e["type"]: e for e in receiver.received}
        assert set(by_type) == {"payment.delivered", "payment.credited", "delivery.failed"}
        delivered = by_type["payment.delivered"]
        assert delivered["id"].startswith("evt_")
        data = delivered["data"]
        assert (data["service"], data["route"], data["request_id"]) == (
            "svc",
            "GET /echo/paid",
            "wh-1",
        )
        assert (data["amount"], data["currency"], data["method"]) == ("0.01", "TEST", "play")
        assert data["reference"].startswith("test_") and data["outcome"] == "delivered"
        assert by_type["delivery.failed"]["data"]["reason"] == "upstream-status"
        assert by_type["payment.credited"]["data"]["amount"] == "0.25"
        assert len(set(receiver.ids())) == 3
    finally:
        receiver.close()


def test_a_hook_gets_only_the_events_it_asked_for(tmp_path: Path, upstream: Upstream) -> None:
    receiver = Receiver()
    try:
        only = 'events = ["delivery.failed"]'
        app = Proxy(load_config(str(hooked(tmp_path, upstream, receiver.port, only))))
        with Served(app) as s, httpx.Client() as client:
            pay(client, s.url + "/svc/echo/paid")
            pay(client, s.url + "/svc/status/paid/500")
            wait_until(lambda: receiver.received, timeout=15)
            time.sleep(0.5)
        assert [e["type"] for e in receiver.received] == ["delivery.failed"]
    finally:
        receiver.close()


def test_our_signature_verifies_and_a_tampered_body_does_not() -> None:
    from mpp_proxy.observe.webhooks import sign

    body = b'{"id":"evt_1"}'
    header = sign("s" * 20, body, int(time.time()))
    assert verify("s" * 20, body, header)
    assert not verify("s" * 20, body + b" ", header)
    assert not verify("t" * 20, body, header)
    assert not verify("s" * 20, body, sign("s" * 20, body, int(time.time()) - 3600))


def test_a_receiver_down_then_up_gets_every_event_once(tmp_path: Path, upstream: Upstream) -> None:
    port = free_port()  # nothing listens here yet
    app = Proxy(load_config(str(hooked(tmp_path, upstream, port))))
    with Served(app) as s, httpx.Client() as client:
        for _ in range(5):
            assert pay(client, s.url + "/svc/echo/paid").status_code == 200
        time.sleep(1.5)  # first attempts and a retry fail
        receiver = Receiver(port)
        try:
            wait_until(lambda: len(receiver.received) >= 5, timeout=30)
            time.sleep(1.0)  # nothing more arrives: no duplicates
            assert sorted(set(receiver.ids())) == sorted(receiver.ids())
            assert len(receiver.received) == 5
            assert {e["type"] for e in receiver.received} == {"payment.delivered"}
        finally:
            receiver.close()


def outbox_size(db: Path) -> int:
    async def size() -> int:
        store = SQLiteStore(str(db))
        await store.open()
        try:
            return await store.outbox_size()
        finally:
            await store.close()

    return asyncio.run(size())


def test_events_queued_before_a_kill_9_are_sent_after_restart(
    tmp_path: Path, upstream: Upstream
) -> None:
    port = free_port()
    config = hooked(tmp_path, upstream, port)
    gw = Gateway(config, workers=1)
    try:
        with httpx.Client() as client:
            for i in range(3):
                r = pay(client, gw.url + "/svc/echo/paid", {"x-request-id": f"k9-{i}"})
                assert r.status_code == 200
        wait_until(lambda: outbox_size(tmp_path / "state.db") == 3, timeout=10)
    finally:
        gw.kill()  # settled and delivered, the webhooks not yet sent: kill -9
    receiver = Receiver(port)
    again = Gateway(config, workers=1)
    try:
        wait_until(lambda: len(receiver.received) >= 3, timeout=30)
        ids = sorted(e["data"]["request_id"] for e in receiver.received)
        assert ids == ["k9-0", "k9-1", "k9-2"]
        wait_until(lambda: outbox_size(tmp_path / "state.db") == 0, timeout=10)
    finally:
        again.stop()
        receiver.close()


def test_an_expired_credit_is_forfeited_counted_and_announced(
    tmp_path: Path, upstream: Upstream
) -> None:
    receiver = Receiver()
    try:
        # Credits last 1 s; the ledger's upkeep runs every 0.1 s and sweeps every 0.25 s.
        extra = "credit_ttl = 1\nlease_seconds = 0.3\n" + HOOK.format(
            port=receiver.port, secret=WEBHOOK_SECRET, events=""
        )
        app = Proxy(load_config(str(write_config(tmp_path, upstream.url, extra))))
        with Served(app) as s, httpx.Client() as client:
            assert pay(client, s.url + "/svc/status/paid/503").status_code == 503
            forfeited = wait_until(
                lambda: [e for e in receiver.received if e["type"] == "payment.forfeited"],
                timeout=15,
            )
            text = client.get(s.url + "/metrics").text
        [event] = forfeited
        assert event["data"]["amount"] == "0.25" and event["data"]["reason"] == "credit-expired"
        assert (event["data"]["service"], event["data"]["route"]) == (
            "svc",
            "GET /status/paid/:code",
        )
        credited = next(e for e in receiver.received if e["type"] == "payment.credited")
        assert credited["data"]["reference"] == event["data"]["reference"]
        line = next(
            x
            for x in text.splitlines()
            if x.startswith("mpp_proxy_payments_total") and "forfeited" in x
        )
        assert line.endswith(" 1.0")
    finally:
        receiver.close()
