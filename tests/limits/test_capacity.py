"""Capacity, served: a full pool or in-flight cap answers 503 + Retry-After before payment,
and a slowed upstream trips load shedding until a probe finds it recovered."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from limits_support import PAID, ledger_row, pay, proxy_toml, serving, wait_for

from mpp_proxy.core import Proxy
from mpp_proxy.state import PaymentStatus
from tests.support.upstream import Upstream


def assert_unavailable(r: httpx.Response, slug: str) -> int:
    assert r.status_code == 503, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["type"].endswith(f"/{slug}")
    assert "www-authenticate" not in r.headers
    wait = int(r.headers["retry-after"])
    assert wait >= 1
    return wait


def concurrently(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
    with ThreadPoolExecutor(len(calls)) as pool:
        return [f.result() for f in [pool.submit(c) for c in calls]]


def ledger(app: Proxy, status: PaymentStatus | None = None) -> list[object]:
    return asyncio.run(app.store.list_payments(status=status))


def test_a_full_pool_answers_503_before_any_paid_request_is_settled(
    tmp_path: Path, upstream: Upstream
) -> None:
    # One upstream connection, a 1 s pool wait: the operator's report (200, 504, 504 with the
    # 504s charged and credited) becomes 200, 503, 503 with nothing charged for the 503s.
    routes = f'"GET /sleep" = {{ {PAID} }}'
    text = proxy_toml(routes, url=upstream.url, service="max_connections = 1")
    with serving(tmp_path, text) as (app, client):
        url = "/api/sleep?s=2"
        credentials = [pay(client, url) for _ in range(3)]
        answers = concurrently(
            [
                lambda c=c: client.get(url, headers={"Authorization": c})  # type: ignore[misc]
                for c in credentials
            ]
        )
        statuses = sorted(r.status_code for r in answers)
        assert statuses == [200, 503, 503], [r.text for r in answers]
        refused = [c for c, r in zip(credentials, answers, strict=True) if r.status_code == 503]
        for r in answers:
            if r.status_code == 503:
                assert_unavailable(r, "over-capacity")
                assert "upstream connections" in r.json()["detail"]
        # The ledger: one delivered payment (recorded just after its last byte went out), no
        # credit of any reason (no "pool-timeout").
        delivered = [PaymentStatus.DELIVERED]
        assert wait_for(lambda: [p.status for p in ledger(app)] == delivered)  # type: ignore[attr-defined]
        assert ledger(app, PaymentStatus.CREDITED) == []
        for credential in refused:
            assert ledger_row(app, credential) is None
        # Each refused credential is still good: paid for once, now that there is room.
        for credential in refused:
            r = client.get(url, headers={"Authorization": credential})
            assert r.status_code == 200, r.text
            assert "payment-receipt" in r.headers
        assert ledger(app, PaymentStatus.CREDITED) == []


def test_a_paid_request_beyond_the_in_flight_cap_is_refused_before_its_payment(
    tmp_path: Path, upstream: Upstream
) -> None:
    # The slot is taken at admit, before the gate: the one that finds none is not charged.
    routes = f'"GET /sleep" = {{ {PAID} }}'
    text = proxy_toml(routes, url=upstream.url, service="max_in_flight = 1\nqueue = 0")
    with serving(tmp_path, text) as (app, client):
        url = "/api/sleep?s=1.5"
        first, second = pay(client, url), pay(client, url)
        with ThreadPoolExecutor(2) as pool:
            holder = pool.submit(client.get, url, headers={"Authorization": first})
            time.sleep(0.3)
            refused = client.get(url, headers={"Authorization": second})
            assert_unavailable(refused, "over-capacity")
            assert "in flight" in refused.json()["detail"]
            assert ledger_row(app, second) is None
            assert holder.result().status_code == 200
        again = client.get(url, headers={"Authorization": second})
        assert again.status_code == 200, again.text
        assert "payment-receipt" in again.headers
        delivered = [PaymentStatus.DELIVERED] * 2
        assert wait_for(lambda: [p.status for p in ledger(app)] == delivered)  # type: ignore[attr-defined]
        assert ledger(app, PaymentStatus.CREDITED) == []


def test_beyond_the_in_flight_cap_and_its_queue_a_request_is_refused_at_once(
    tmp_path: Path, upstream: Upstream
) -> None:
    service = 'max_in_flight = 2\nqueue = 1\nqueue_timeout = "10s"'
    text = proxy_toml('"GET /sleep" = "free"', url=upstream.url, service=service)
    with serving(tmp_path, text) as (_, client):
        done: list[tuple[int, int]] = []  # (status, order of completion)
        lock = threading.Lock()

        def call() -> httpx.Response:
            r = client.get("/api/sleep?s=1.5")
            with lock:
                done.append((r.status_code, len(done)))
            return r

        started = []
        with ThreadPoolExecutor(4) as pool:
            for _ in range(4):
                started.append(pool.submit(call))
                time.sleep(0.1)  # in order: two in flight, one queued, one beyond the queue
            answers = [f.result() for f in started]
        assert [r.status_code for r in answers] == [200, 200, 200, 503]
        assert_unavailable(answers[3], "over-capacity")
        # "At once": the refusal came back first, while the others still waited upstream.
        assert done[0] == (503, 0)


def test_a_queued_request_is_refused_when_its_wait_runs_out(
    tmp_path: Path, upstream: Upstream
) -> None:
    service = 'max_in_flight = 1\nqueue = 5\nqueue_timeout = "300ms"'
    text = proxy_toml('"GET /sleep" = "free"', url=upstream.url, service=service)
    with serving(tmp_path, text) as (_, client):
        with ThreadPoolExecutor(2) as pool:
            holder = pool.submit(client.get, "/api/sleep?s=1.5")
            time.sleep(0.2)
            waiter = pool.submit(client.get, "/api/sleep?s=0")
            assert_unavailable(waiter.result(), "over-capacity")
            assert holder.result().status_code == 200
        # The slots are all back: a request goes straight through.
        assert client.get("/api/sleep?s=0").status_code == 200


def test_a_slowed_upstream_trips_shedding_in_flight_requests_finish_and_recovery_reopens(
    tmp_path: Path, upstream: Upstream
) -> None:
    text = proxy_toml('"GET /sleep" = "free"', url=upstream.url, service='shed_above = "5s"')
    with serving(tmp_path, text) as (_, client):
        assert client.get("/api/sleep?s=0").status_code == 200
        with ThreadPoolExecutor(13) as pool:
            # Ten responses slowed to 8 s trip it when they come back; three more are still in
            # flight then.
            slow = [pool.submit(client.get, "/api/sleep?s=8") for _ in range(10)]
            time.sleep(1.0)
            late = [pool.submit(client.get, "/api/sleep?s=8") for _ in range(3)]
            assert all(f.result().status_code == 200 for f in slow)
            shed = client.get("/api/sleep?s=0")
            wait = assert_unavailable(shed, "shedding-load")
            assert wait <= 5
            # In-flight requests are never cut.
            assert all(f.result().status_code == 200 for f in late)
        # After Retry-After one request probes; answered in time, the service reopens.
        time.sleep(wait)
        assert client.get("/api/sleep?s=0").status_code == 200
        assert client.get("/api/sleep?s=0").status_code == 200
