"""OTLP/HTTP tracing, received by a loopback OTLP receiver that decodes what arrives with
opentelemetry-proto: one server span per request, payment and upstream children, the
client's trace continued and the upstream's joined; off by default, and then not loaded."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from observe_harness import pay, write_config
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from mpp_proxy import Proxy, load_config
from tests.support.served import Served
from tests.support.upstream import Upstream

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


class OtlpReceiver:
    """An OTLP/HTTP trace endpoint on loopback: every span it is sent, decoded."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.paths: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.paths.append(self.path)
                for resource in request.resource_spans:
                    for scope in resource.scope_spans:
                        receiver.spans.extend((resource.resource, s) for s in scope.spans)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    r = OtlpReceiver()
    yield r
    r.close()


def attributes(span: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in span.attributes:
        value = kv.value
        out[kv.key] = getattr(value, value.WhichOneof("value"))
    return out


def test_spans_arrive_with_parent_child_links(tmp_path: Path, receiver: OtlpReceiver) -> None:
    traced = f'[proxy.tracing]\notlp_endpoint = "{receiver.url}"\nservice_name = "gw-test"\n'
    traceparent = f"00-{TRACE_ID}-{CLIENT_SPAN}-01"
    with Upstream() as up:
        app = Proxy(load_config(str(write_config(tmp_path, up.url, traced))))
        with Served(app) as s, httpx.Client() as client:
            r = pay(client, s.url + "/svc/echo/paid", {"traceparent": traceparent})
            assert r.status_code == 200
            upstream_saw = dict(r.json()["headers"])["traceparent"]
    # Leaving the server shut the app down, which flushed its spans.
    assert receiver.paths and set(receiver.paths) == {"/v1/traces"}
    spans = {s.name: s for _, s in receiver.spans if s.trace_id.hex() == TRACE_ID}
    # Test money settles after the upstream answered: its own span, after the upstream's head.
    expected = {"GET /svc/echo/paid", "mpp.payment", "mpp.settlement", "upstream"}
    assert set(spans) >= expected, list(spans)
    assert spans["mpp.settlement"].start_time_unix_nano >= spans["upstream"].start_time_unix_nano
    server = spans["GET /svc/echo/paid"]
    assert server.parent_span_id.hex() == CLIENT_SPAN
    assert server.kind == server.SPAN_KIND_SERVER
    for child in ("mpp.payment", "mpp.settlement", "upstream"):
        assert spans[child].parent_span_id == server.span_id
    upstream = spans["upstream"]
    assert upstream.kind == upstream.SPAN_KIND_CLIENT
    # The upstream was handed our upstream span as its parent, in the same trace.
    assert upstream_saw == f"00-{TRACE_ID}-{upstream.span_id.hex()}-01"
    got = attributes(server)
    assert got["http.request.method"] == "GET" and got["http.route"] == "/svc/echo/paid"
    assert got["mpp.route"] == "GET /echo/paid" and got["mpp.service"] == "svc"
    assert got["http.response.status_code"] == 200
    assert got["mpp.method"] == "play" and got["mpp.amount"] == "1"
    assert got["mpp.outcome"] == "delivered"
    assert attributes(upstream)["http.response.status_code"] == 200
    resource = next(res for res, s in receiver.spans if s.span_id == server.span_id)
    names = {kv.key: kv.value.string_value for kv in resource.attributes}
    assert names["service.name"] == "gw-test"
    # The 402 before the payment is a trace of its own (the client sent no traceparent).
    assert any(
        s.name == "GET /svc/echo/paid" and s.trace_id.hex() != TRACE_ID for _, s in receiver.spans
    )


SCRIPT = """
import asyncio, sys, httpx
from mpp_proxy import Proxy, load_config
app = Proxy(load_config(sys.argv[1]))
async def main():
    await app.startup()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        r = await client.get("/svc/echo/free")
    await app.shutdown()
    return r.status_code
print(asyncio.run(main()), any(m.startswith("opentelemetry") for m in sys.modules))
"""


def test_without_an_endpoint_opentelemetry_is_never_imported(tmp_path: Path) -> None:
    with Upstream() as up:
        config = write_config(tmp_path, up.url)
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
    assert done.stdout.split() == ["200", "False"], done.stdout + done.stderr
