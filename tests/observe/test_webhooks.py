"""Webhooks: signed deliveries to a real receiver on loopback, at least once through the
store's outbox: a receiver that was down gets every event once it is up (each id once), and
events queued before a kill -9 are sent by the restarted server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from observe_harness import WEBHOOK_SECRET, Gateway, Receiver, pay, wait_until, write_config

from mpp_proxy import Proxy, load_config
from mpp_proxy.observe.webhooks import verify
from mpp_proxy.state.sqlite import SQLiteStore
from tests.support.ports import free_port
from tests.support.served import Served
from tests.support.upstream import Upstream

HOOK = """
[[proxy.webhooks]]
url = "http://127.0.0.1:{port}/hooks/mpp"
secret = "{secret}"
{events}
"""


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
            # Settled before forwarding, then the upstream failed: credited.
            first = pay(client, s.url + "/svc/status/first/502", {"x-request-id": "wh-2"})
            assert first.status_code == 502
            # Settled after success (the default), the upstream failed first: nothing charged.
            after = pay(client, s.url + "/svc/status/paid/502", {"x-request-id": "wh-3"})
            assert after.status_code == 502
            client.get(s.url + "/svc/echo/free")
            wait_until(lambda: len(receiver.received) == 4, timeout=15)
        assert receiver.bad_signatures == 0
        types = sorted((e["data"]["request_id"], e["type"]) for e in receiver.received)
        assert types == [
            ("wh-1", "payment.delivered"),
            ("wh-2", "delivery.failed"),
            ("wh-2", "payment.credited"),
            ("wh-3", "delivery.failed"),
        ]
        by_type = {e["type"]: e for e in receiver.received if e["data"]["request_id"] != "wh-3"}
        released = next(e for e in receiver.received if e["data"]["request_id"] == "wh-3")
        assert released["data"]["outcome"] == "released" and released["data"]["reference"] == ""
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
        assert len(set(receiver.ids())) == 4
    finally:
        receiver.close()


def test_a_hook_gets_only_the_events_it_asked_for(tmp_path: Path, upstream: Upstream) -> None:
    receiver = Receiver()
    try:
        only = 'events = ["delivery.failed"]'
        app = Proxy(load_config(str(hooked(tmp_path, upstream, receiver.port, only))))
        with Served(app) as s, httpx.Client() as client:
            pay(client, s.url + "/svc/echo/paid")
            pay(client, s.url + "/svc/status/first/500")
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
    gw = Gateway.started(config, workers=1)
    try:
        with httpx.Client() as client:
            for i in range(3):
                r = pay(client, gw.url + "/svc/echo/paid", {"x-request-id": f"k9-{i}"})
                assert r.status_code == 200
        wait_until(lambda: outbox_size(tmp_path / "state.db") == 3, timeout=10)
    finally:
        gw.kill9()  # settled and delivered, the webhooks not yet sent: kill -9
    receiver = Receiver(port)
    again = Gateway.started(config, workers=1)
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
            assert pay(client, s.url + "/svc/status/first/503").status_code == 503
            forfeited = wait_until(
                lambda: [e for e in receiver.received if e["type"] == "payment.forfeited"],
                timeout=15,
            )
            text = client.get(s.url + "/metrics").text
        [event] = forfeited
        assert event["data"]["amount"] == "0.25" and event["data"]["reason"] == "credit-expired"
        assert (event["data"]["service"], event["data"]["route"]) == (
            "svc",
            "GET /status/first/:code",
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
