"""The chain's stages on their own: intake, the body reader, pay, forward's lease, reserved."""

from __future__ import annotations

import asyncio
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any

import orjson
import pytest
import uvloop
from core_harness import service

from mpp_proxy.client.testmoney import pay_challenge
from mpp_proxy.config.model import (
    Config,
    Price,
    ProxySettings,
    Route,
    Secret,
    TestMoneyMethod,
    Timeouts,
)
from mpp_proxy.core import Proxy
from mpp_proxy.core.body import RequestBody
from mpp_proxy.core.errors import BodyTooLarge, ClientGone, ClientStalled
from mpp_proxy.core.exchange import Exchange
from mpp_proxy.core.intake import intake, receive_first
from mpp_proxy.core.plan import Planner, RoutePlan
from mpp_proxy.payments import PaymentGate
from mpp_proxy.state import PaymentStatus, open_store
from tests.support.upstream import Upstream, spawn_upstream

Message = dict[str, Any]
PRICE = Price(Decimal("0.05"), ("play",))
FAST = Timeouts(connect=1.0, read=2.0, write=0.3, pool=1.0)


def paid_config(base_url: str) -> Config:
    return Config(
        proxy=ProxySettings(
            secret_key=Secret("core-stage-test-secret-0123456789abcdef"),
            realm="stages.test",
            state="memory://",
            allow_test_payments=True,
        ),
        methods=(TestMoneyMethod("play"),),
        services=(
            service(
                "api",
                base_url,
                timeouts=FAST,
                max_body_bytes=1000,
                routes=(
                    # Settled before forwarding: these pin credits (see test_core_settle).
                    Route("POST", "/echo/paid", PRICE, settle="before"),
                    Route("POST", "/status/:code", PRICE, settle="before"),
                    Route("*", "/echo/*"),
                    Route("*", "/status/*"),
                ),
            ),
        ),
    )


def scope(method: str, path: str, *headers: tuple[bytes, bytes], http: str = "1.1") -> Message:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": http,
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"proxy.test"), *headers],
        "client": ("127.0.0.1", 5555),
        "server": ("127.0.0.1", 8000),
    }


def body_messages(*chunks: bytes, then_wait: bool = False) -> Callable[[], Awaitable[Message]]:
    """receive(): the chunks as http.request messages; afterwards wait (stall) or disconnect."""
    queue = list(chunks)

    async def receive() -> Message:
        if queue:
            chunk = queue.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(queue) or then_wait}
        if then_wait:
            await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    return receive


def route_plan(config: Config, key: str) -> RoutePlan:
    gate = PaymentGate(config, open_store("memory://"))
    svc = config.services[0]
    route = next(r for r in svc.routes if r.key == key)
    return Planner(config.services, gate)(svc, route)


def exchange_for(plan: RoutePlan, sc: Message, receive: Any = None) -> Exchange:
    async def send(message: Message) -> None:
        raise AssertionError("intake never answers by itself")

    return Exchange(sc, receive or body_messages(), send, plan, sc["method"], sc["path"], "/echo")


async def call(app: Proxy, sc: Message, receive: Any) -> list[Message]:
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    await asyncio.wait_for(app(sc, receive, send), 10)
    return sent


def problem_of(sent: list[Message]) -> tuple[int, dict[str, Any]]:
    return sent[0]["status"], orjson.loads(b"".join(m.get("body", b"") for m in sent[1:]))


# ---------------------------------------------------------------------------------- intake


def test_intake_frames_a_declared_length_and_strips_what_the_upstream_must_not_see() -> None:
    plan = route_plan(paid_config("http://127.0.0.1:9"), "* /echo/*")
    ex = exchange_for(
        plan,
        scope(
            "POST",
            "/api/echo/x",
            (b"content-length", b"5"),
            (b"authorization", b"Bearer client-secret"),
            (b"accept-payment", b"test/charge"),
            (b"x-kept", b"1"),
        ),
    )
    assert intake(ex) is None
    names = [name for name, _ in ex.headers]
    assert b"authorization" not in names and b"accept-payment" not in names
    assert (b"x-kept", b"1") in ex.headers
    assert ex.reader is not None and ex.content_length == 5
    assert ex.payment is None  # a free route captures no payment headers


def test_intake_of_a_bodyless_http1_request_needs_no_receive() -> None:
    plan = route_plan(paid_config("http://127.0.0.1:9"), "* /echo/*")
    ex = exchange_for(plan, scope("GET", "/api/echo/x"))
    assert intake(ex) is None
    assert ex.reader is None and ex.body == b"" and not ex.more
    assert not any(name in (b"content-length", b"transfer-encoding") for name, _ in ex.headers)


def test_intake_refuses_a_declared_body_over_the_limit_before_reading_it() -> None:
    plan = route_plan(paid_config("http://127.0.0.1:9"), "POST /echo/paid")
    ex = exchange_for(plan, scope("POST", "/api/echo/paid", (b"content-length", b"1001")))
    answer = intake(ex)
    assert answer is not None and answer.status == 413


def test_intake_captures_the_payment_headers_of_a_paid_route_in_the_same_scan() -> None:
    plan = route_plan(paid_config("http://127.0.0.1:9"), "POST /echo/paid")
    ex = exchange_for(
        plan,
        scope(
            "POST",
            "/api/echo/paid",
            (b"authorization", b"Payment abc"),
            (b"accept-payment", b"test/charge"),
            (b"payment-authorization", b"Payment def"),
        ),
    )
    assert intake(ex) is None
    assert ex.payment == [
        (b"authorization", b"Payment abc"),
        (b"accept-payment", b"test/charge"),
        (b"payment-authorization", b"Payment def"),
    ]


def test_intake_refuses_what_the_codec_would_refuse_on_a_paid_route_before_payment() -> None:
    plan = route_plan(paid_config("http://127.0.0.1:9"), "POST /echo/paid")
    ex = exchange_for(plan, scope("POST", "/api/echo/paid", (b"x-bad", b"a\x01b")))
    answer = intake(ex)
    assert answer is not None and answer.status == 400 and answer.slug == "bad-request"


def test_chunked_body_is_framed_chunked_and_an_http2_single_message_by_its_length() -> None:
    plan = route_plan(paid_config("http://127.0.0.1:9"), "* /echo/*")

    async def frame(sc: Message, *chunks: bytes) -> Exchange:
        ex = exchange_for(plan, sc, body_messages(*chunks))
        assert intake(ex) is None
        await receive_first(ex)
        return ex

    chunked = asyncio.run(
        frame(scope("POST", "/api/echo/x", (b"transfer-encoding", b"chunked")), b"ab", b"cd")
    )
    assert (b"transfer-encoding", b"chunked") in chunked.headers and chunked.more
    h2 = asyncio.run(frame(scope("POST", "/api/echo/x", http="2"), b"abcd"))
    assert (b"content-length", b"4") in h2.headers and not h2.more


def test_a_paid_body_without_a_declared_length_is_read_whole_before_payment() -> None:
    plan = route_plan(paid_config("http://127.0.0.1:9"), "POST /echo/paid")
    sc = scope("POST", "/api/echo/paid", (b"transfer-encoding", b"chunked"))
    ex = exchange_for(plan, sc, body_messages(b"ab", b"cd", b"ef"))
    assert intake(ex) is None
    asyncio.run(receive_first(ex))
    assert ex.body == b"abcdef" and not ex.more


# ---------------------------------------------------------------------------------- body


@pytest.mark.parametrize(
    ("receive", "failure"),
    [
        (body_messages(b"x" * 600, b"x" * 600), BodyTooLarge),
        (body_messages(b"x", then_wait=True), ClientStalled),
        (body_messages(b"x"), ClientGone),
    ],
    ids=["over the limit", "stalled", "disconnected"],
)
def test_the_body_reader_turns_each_client_fault_into_its_failure(
    receive: Any, failure: type[Exception]
) -> None:
    async def read() -> None:
        reader = RequestBody(receive, limit=1000, timeout=0.2)
        more = True
        while more:
            _, more = await reader.next()
        await reader.next()  # past the end: the client is gone

    with pytest.raises(failure):
        asyncio.run(read())


# ---------------------------------------------------------------------------------- pay


def test_a_paid_request_without_a_credential_gets_its_402_only_after_its_body(
    upstream: Upstream,
) -> None:
    app = Proxy(paid_config(upstream.url))
    sc = scope("POST", "/api/echo/paid", (b"content-length", b"1000"))

    async def main() -> list[Message]:
        await app.startup()
        try:
            return await call(app, sc, body_messages(b"x" * 10, then_wait=True))
        finally:
            await app.shutdown()

    status, doc = problem_of(asyncio.run(main()))
    assert status == 408 and doc["type"].endswith("/request-timeout")


def test_a_paid_request_whose_body_stalls_after_payment_keeps_its_payment_as_a_credit(
    upstream: Upstream,
) -> None:
    app = Proxy(paid_config(upstream.url))

    async def main() -> tuple[list[Message], list[Any]]:
        await app.startup()
        try:
            sc = scope("POST", "/api/echo/paid", (b"content-length", b"1000"))
            first = await call(app, sc, body_messages(b"x" * 1000))
            challenges = [v.decode() for k, v in first[0]["headers"] if k == b"www-authenticate"]
            credential = pay_challenge(challenges).encode()
            paid = scope(
                "POST",
                "/api/echo/paid",
                (b"content-length", b"1000"),
                (b"authorization", credential),
            )
            sent = await call(app, paid, body_messages(b"x" * 10, then_wait=True))
            return sent, await app.store.list_payments()
        finally:
            await app.shutdown()

    sent, rows = asyncio.run(main())
    status, doc = problem_of(sent)
    assert status == 408 and doc["type"].endswith("/payment-credited")
    assert doc["reason"] == "client-stalled"
    assert [r.status for r in rows] == [PaymentStatus.CREDITED]


def test_a_paid_upload_streams_through_holding_at_most_two_of_its_chunks() -> None:
    """A 256 KiB paid upload in 64 KiB messages: the proxy's Python heap never holds the
    body whole (a whole-body buffer plus its join would be 512 KiB). The upstream answers a
    few bytes, so what is traced is the request's side."""
    chunk, chunks = 64 * 1024, 4
    length = (b"content-length", b"%d" % (chunk * chunks))

    def fresh_chunks(n: int) -> Callable[[], Awaitable[Message]]:
        left = n

        async def receive() -> Message:
            nonlocal left
            left -= 1
            return {"type": "http.request", "body": b"x" * chunk, "more_body": left > 0}

        return receive

    async def main(app: Proxy) -> tuple[int, int]:
        await app.startup()
        try:
            first = await call(app, scope("POST", "/api/status/200", length), fresh_chunks(chunks))
            challenges = [v.decode() for k, v in first[0]["headers"] if k == b"www-authenticate"]
            paid = scope(
                "POST",
                "/api/status/200",
                length,
                (b"authorization", pay_challenge(challenges).encode()),
            )
            tracemalloc.start()
            try:
                held = tracemalloc.get_traced_memory()[0]
                sent = await call(app, paid, fresh_chunks(chunks))
                peak = tracemalloc.get_traced_memory()[1] - held
            finally:
                tracemalloc.stop()
            return sent[0]["status"], peak
        finally:
            await app.shutdown()

    with spawn_upstream() as (url, _):
        config = paid_config(url)
        api = replace(config.services[0], max_body_bytes=1024 * 1024)
        # On uvloop, as granian serves it (asyncio's own transport copies what it buffers).
        status, peak = uvloop.run(main(Proxy(replace(config, services=(api,)))))
    assert status == 200
    # At most two chunks (one in hand, one still queued in the transport), plus the
    # request's own small objects: never the 256 KiB body.
    assert peak < 2 * chunk + 16 * 1024, peak


# ---------------------------------------------------------------------------------- forward


def test_every_way_an_exchange_ends_gives_its_connection_back_once(upstream: Upstream) -> None:
    app = Proxy(paid_config(upstream.url))
    pool = app.pool("api")

    async def main() -> None:
        await app.startup()
        try:
            # Two complete exchanges (a success and an upstream error status) share one
            # connection: it went back for reuse after each.
            await call(app, scope("GET", "/api/echo/a"), body_messages())
            await call(app, scope("GET", "/api/status/500"), body_messages())
            assert (pool.opened, pool.idle, pool.in_use) == (1, 1, 0)
            # A client gone mid-upload and one that stalls: their connections are dropped.
            post = scope("POST", "/api/echo/b", (b"content-length", b"100"))
            await call(app, post, body_messages(b"x" * 10))
            await call(app, post, body_messages(b"x" * 10, then_wait=True))
            assert (pool.idle, pool.in_use) == (0, 0)
        finally:
            await app.shutdown()

    asyncio.run(main())


# ---------------------------------------------------------------------------------- reserved


def test_reserved_paths_refuse_other_methods_before_doing_any_work() -> None:
    app = Proxy(paid_config("http://127.0.0.1:9"))
    sent = asyncio.run(call(app, scope("POST", "/readyz"), body_messages()))
    assert sent[0]["status"] == 405
    assert (b"allow", b"GET, HEAD") in sent[0]["headers"]


def test_discovery_links_carry_the_mount_prefix() -> None:
    app = Proxy(paid_config("http://127.0.0.1:9"))
    sc = scope("GET", "/pay/openapi.json")
    sc["root_path"] = "/pay"
    sent = asyncio.run(call(app, sc, body_messages()))
    document = orjson.loads(sent[1]["body"])
    assert document["servers"] == [{"url": "/pay"}]
    assert document["x-service-info"]["docs"]["llms"] == "/pay/llms.txt"
    sc = scope("GET", "/pay/llms.txt")
    sc["root_path"] = "/pay"
    text = asyncio.run(call(app, sc, body_messages()))[1]["body"].decode()
    assert "(/pay/openapi.json)" in text
