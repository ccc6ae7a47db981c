"""`proxy.events.subscribe(handler)`: typed frozen events per finished request; a handler that
raises is logged and the request is unharmed; with nothing watching, nothing is built."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from observe_harness import pay, write_config

from mpp_proxy import Proxy, load_config
from mpp_proxy.observe.events import (
    ConfigReloaded,
    Event,
    PaymentCredited,
    PaymentDelivered,
    PaymentReleased,
    PaymentVerified,
    UpstreamError,
)
from tests.support.served import Served
from tests.support.upstream import Upstream


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


def proxy(tmp_path: Path, upstream: Upstream, extra: str = "") -> Proxy:
    return Proxy(load_config(str(write_config(tmp_path, upstream.url, extra))))


def test_a_paid_request_is_told_step_by_step(tmp_path: Path, upstream: Upstream) -> None:
    app = proxy(tmp_path, upstream)
    seen: list[Event] = []
    app.events.subscribe(seen.append)
    with Served(app) as s, httpx.Client() as client:
        assert pay(client, s.url + "/svc/echo/paid", {"x-request-id": "ev-1"}).status_code == 200
    mine = [e for e in seen if e.request_id == "ev-1"]
    assert [e.name for e in mine] == [
        "request_received",
        "route_matched",
        "payment_verified",
        "upstream_forwarded",
        "upstream_response",
        "payment_delivered",
    ]
    verified = next(e for e in mine if isinstance(e, PaymentVerified))
    assert (verified.service, verified.route) == ("svc", "GET /echo/paid")
    assert verified.metadata["method"] == "play" and verified.metadata["amount"] == "1"
    delivered = next(e for e in mine if isinstance(e, PaymentDelivered))
    assert delivered.measurements["duration_seconds"] > 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        delivered.service = "x"  # type: ignore[misc]
    assert any(isinstance(e, ConfigReloaded) for e in seen)
    required = [e.name for e in seen if e.name == "payment_required"]
    assert required == ["payment_required"]


def test_failures_become_error_release_and_credit_events(
    tmp_path: Path, upstream: Upstream
) -> None:
    app = proxy(tmp_path, upstream)
    seen: list[Event] = []
    app.events.subscribe(seen.append)
    with Served(app) as s, httpx.Client() as client:
        client.get(s.url + "/down/x")
        # Settled after success (the default): the 500 comes first, nothing is charged.
        assert pay(client, s.url + "/svc/status/paid/500").status_code == 500
        # Settled before forwarding: the payment is kept as a credit.
        assert pay(client, s.url + "/svc/status/first/500").status_code == 500
    errors = [e for e in seen if isinstance(e, UpstreamError)]
    assert [e.metadata["kind"] for e in errors] == ["refused"]
    released = [e for e in seen if isinstance(e, PaymentReleased)]
    assert len(released) == 1 and released[0].route == "GET /status/paid/:code"
    assert released[0].metadata["reason"] == "upstream-status"
    assert released[0].metadata["outcome"] == "released"
    credited = [e for e in seen if isinstance(e, PaymentCredited)]
    assert len(credited) == 1 and credited[0].metadata["reason"] == "upstream-status"
    assert credited[0].route == "GET /status/first/:code"


def test_a_raising_handler_is_logged_and_never_breaks_a_request(
    tmp_path: Path, upstream: Upstream, caplog: pytest.LogCaptureFixture
) -> None:
    app = proxy(tmp_path, upstream)
    seen: list[str] = []

    def broken(event: Event) -> None:
        raise RuntimeError("handler bug")

    app.events.subscribe(broken)
    app.events.subscribe(lambda e: seen.append(e.name))
    with caplog.at_level(logging.ERROR, "mpp_proxy.events"), Served(app) as s:
        r = httpx.get(s.url + "/svc/echo/free")
    assert r.status_code == 200
    assert "route_matched" in seen
    assert "handler bug" in caplog.text


def test_unsubscribe_and_nothing_watching_builds_nothing(
    tmp_path: Path, upstream: Upstream
) -> None:
    app = proxy(tmp_path, upstream, "[proxy.metrics]\nenabled = false\n")
    assert not app.observer.on  # no metrics, no log, no subscriber, no tracing, no webhooks
    seen: list[Event] = []
    unsubscribe = app.events.subscribe(seen.append)
    assert app.observer.on
    unsubscribe()
    assert not app.observer.on
    with Served(app) as s:
        assert httpx.get(s.url + "/svc/echo/free").status_code == 200
    assert seen == []
