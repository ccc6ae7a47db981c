"""OpenTelemetry tracing, exported over OTLP/HTTP: imported only when `[proxy.tracing]
otlp_endpoint` is set, so an app without it never loads the SDK.

One SERVER span per matched request (parent: the client's `traceparent`, when it sent one),
with children for the payment verification, its settlement when that waits for the upstream's
answer, and the upstream exchange; the upstream request
carries the upstream span's own `traceparent`, so the upstream's spans join the same trace.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from mpp_proxy.config.model import TracingSettings
from mpp_proxy.observe.outcome import Outcome

_PROPAGATOR = TraceContextTextMapPropagator()
_TRACE_HEADERS = (b"traceparent", b"tracestate")


class Trace:
    """The spans of one request, begun and ended by the core at its stages."""

    __slots__ = ("_tracing", "payment", "server", "upstream")

    def __init__(self, tracing: Tracing, server: Any) -> None:
        self._tracing = tracing
        self.server = server
        self.payment: Any = None
        self.upstream: Any = None

    def begin_payment(self, name: str = "mpp.payment") -> None:
        """A payment step's span: verification in the pay stage (`mpp.payment`), or settling
        after the upstream answered (`mpp.settlement`)."""
        self._tracing.begin_payment(self, name)

    def end_payment(self, answered: int | None) -> None:
        self._tracing.end_payment(self, answered)

    def begin_upstream(self, headers: list[tuple[bytes, bytes]], host: str) -> None:
        self._tracing.begin_upstream(self, headers, host)

    def end(self, o: Outcome) -> None:
        self._tracing.end(self, o)


class Tracing:
    """A tracer provider of our own (not the global one an embedding app may have set)."""

    def __init__(self, settings: TracingSettings, *, version: str) -> None:
        endpoint = settings.otlp_endpoint.rstrip("/")
        if not endpoint.endswith("/v1/traces"):
            endpoint += "/v1/traces"
        resource = Resource.create(
            {"service.name": settings.service_name, "service.version": version}
        )
        self.provider = TracerProvider(resource=resource)
        exporter = OTLPSpanExporter(
            endpoint=endpoint, headers={k: v.value for k, v in settings.headers}
        )
        self.provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=500))
        self.tracer = self.provider.get_tracer("mpp_proxy", version)

    def begin(
        self, headers: list[tuple[bytes, bytes]], method: str, path: str, service: str, route: str
    ) -> Trace:
        """The SERVER span of a matched request; `route` is the configured route key, whose
        pattern (under the service's prefix) is the semantic conventions' http.route."""
        carrier = {
            name.decode("latin-1"): value.decode("latin-1")
            for name, value in headers
            if name.lower() in _TRACE_HEADERS
        }
        parent = _PROPAGATOR.extract(carrier) if carrier else None
        template = f"/{service}{route.partition(' ')[2]}"
        span = self.tracer.start_span(
            f"{method} {template}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "http.request.method": method,
                "url.path": path,
                "http.route": template,
                "mpp.service": service,
                "mpp.route": route,
            },
        )
        return Trace(self, span)

    def begin_payment(self, t: Trace, name: str) -> None:
        self.end_payment(t, None)
        t.payment = self.tracer.start_span(name, context=trace.set_span_in_context(t.server))

    def end_payment(self, t: Trace, answered: int | None) -> None:
        span, t.payment = t.payment, None
        if span is None:
            return
        if answered is not None:
            span.set_attribute("http.response.status_code", answered)
        span.end()

    def begin_upstream(self, t: Trace, headers: list[tuple[bytes, bytes]], host: str) -> None:
        """The upstream exchange's CLIENT span; `headers` (the upstream request's) get its
        traceparent in place of the client's."""
        span = self.tracer.start_span(
            "upstream",
            context=trace.set_span_in_context(t.server),
            kind=SpanKind.CLIENT,
            attributes={"server.address": host},
        )
        t.upstream = span
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        headers[:] = [h for h in headers if h[0] not in _TRACE_HEADERS]
        headers.extend((k.encode("latin-1"), v.encode("latin-1")) for k, v in carrier.items())

    def end(self, t: Trace, o: Outcome) -> None:
        self.end_payment(t, None)
        server = t.server
        if t.upstream is not None:
            up = t.upstream
            if o.source == "upstream":
                up.set_attribute("http.response.status_code", o.status)
            if o.error:
                up.set_attribute("error.type", o.error)
                up.set_status(Status(StatusCode.ERROR))
            up.end()
        server.set_attribute("http.response.status_code", o.status)
        server.set_attribute("mpp.request_id", o.request_id)
        p = o.payment
        if p is not None:
            server.set_attribute("mpp.method", p.method)
            server.set_attribute("mpp.amount", p.amount)
            server.set_attribute("mpp.currency", p.currency)
            server.set_attribute("mpp.outcome", p.outcome)
            server.set_attribute("mpp.reference", p.reference)
        elif o.refused is not None:
            server.set_attribute("mpp.outcome", o.refused[0])
        if o.challenges:
            server.set_attribute("mpp.challenge.methods", list(o.challenges))
        if o.status >= 500:
            server.set_status(Status(StatusCode.ERROR))
        server.end()

    def shutdown(self) -> None:
        self.provider.shutdown()
