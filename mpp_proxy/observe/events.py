"""Events for code that embeds the gateway: `proxy.events.subscribe(handler)`.

Each finished request becomes a short sequence of typed, frozen events, emitted in the order
they happened once the request is over (request_received, route_matched, payment_...,
upstream_...). A handler that raises is logged and never breaks a request. With no
subscriber nothing is built: the hot path only checks that the list is empty.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from mpp_proxy.observe.outcome import Outcome

log = logging.getLogger("mpp_proxy.events")


@dataclass(frozen=True, slots=True)
class Event:
    """Base: which request, and the measurements (seconds) and metadata of this step."""

    name: ClassVar[str] = "event"
    request_id: str
    service: str = ""
    route: str = ""
    measurements: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RequestReceived(Event):
    name: ClassVar[str] = "request_received"


@dataclass(frozen=True, slots=True)
class RouteMatched(Event):
    name: ClassVar[str] = "route_matched"


@dataclass(frozen=True, slots=True)
class PaymentRequired(Event):
    name: ClassVar[str] = "payment_required"


@dataclass(frozen=True, slots=True)
class PaymentVerified(Event):
    name: ClassVar[str] = "payment_verified"


@dataclass(frozen=True, slots=True)
class PaymentCredited(Event):
    name: ClassVar[str] = "payment_credited"


@dataclass(frozen=True, slots=True)
class PaymentDelivered(Event):
    name: ClassVar[str] = "payment_delivered"


@dataclass(frozen=True, slots=True)
class PaymentRefunded(Event):
    name: ClassVar[str] = "payment_refunded"


@dataclass(frozen=True, slots=True)
class PaymentReleased(Event):
    """The upstream failed before the payment settled: nothing was charged."""

    name: ClassVar[str] = "payment_released"


@dataclass(frozen=True, slots=True)
class PaymentSettleFailed(Event):
    """The upstream answered with success, then settling was refused: nothing was charged and
    the answer was not delivered."""

    name: ClassVar[str] = "payment_settle_failed"


@dataclass(frozen=True, slots=True)
class UpstreamForwarded(Event):
    name: ClassVar[str] = "upstream_forwarded"


@dataclass(frozen=True, slots=True)
class UpstreamResponse(Event):
    name: ClassVar[str] = "upstream_response"


@dataclass(frozen=True, slots=True)
class UpstreamError(Event):
    name: ClassVar[str] = "upstream_error"


@dataclass(frozen=True, slots=True)
class ConfigReloaded(Event):
    name: ClassVar[str] = "config_reloaded"


Handler = Callable[[Event], Any]


class Events:
    """The subscribers of one app."""

    __slots__ = ("_changed", "_decimals", "handlers")

    def __init__(
        self, decimals: dict[str, int] | None = None, changed: Callable[[], None] | None = None
    ) -> None:
        self.handlers: list[Handler] = []
        self._decimals = decimals or {}
        self._changed = changed

    def subscribe(self, handler: Handler) -> Callable[[], None]:
        """Call `handler(event)` for every event; returns a function that unsubscribes."""
        self.handlers.append(handler)
        if self._changed is not None:
            self._changed()

        def unsubscribe() -> None:
            if handler in self.handlers:
                self.handlers.remove(handler)
                if self._changed is not None:
                    self._changed()

        return unsubscribe

    def emit(self, event: Event) -> None:
        for handler in tuple(self.handlers):
            try:
                result = handler(event)
                if inspect.isawaitable(result):
                    _spawn(result)
            except Exception:
                log.exception("event handler %r failed on %s", handler, event.name)

    def record(self, o: Outcome) -> None:
        for event in self.of(o):
            self.emit(event)

    def of(self, o: Outcome) -> Iterator[Event]:
        """The events one finished request is made of, in order."""
        rid = o.request_id
        base = {"method": o.method, "path": o.path}
        yield RequestReceived(rid, metadata=base)
        if not o.service:
            return
        s, r = o.service, o.route
        yield RouteMatched(rid, s, r, metadata=base)
        if o.challenges:
            yield PaymentRequired(rid, s, r, metadata={"methods": list(o.challenges)})
        p = o.payment
        if p is not None:
            paid = {
                "method": p.method,
                "amount": p.amount,
                "currency": p.currency,
                "reference": p.reference,
                "decimals": self._decimals.get(p.method, 0),
            }
            yield PaymentVerified(rid, s, r, metadata=paid)
        if o.upstream is not None:
            yield UpstreamForwarded(rid, s, r, metadata=base)
            yield UpstreamResponse(
                rid, s, r, {"upstream_seconds": o.upstream}, {"status": o.status}
            )
        if o.error:
            yield UpstreamError(rid, s, r, {"duration_seconds": o.duration}, {"kind": o.error})
        if p is not None:
            ended = _ENDS.get(p.outcome)
            if ended is not None:
                done = {**paid, "outcome": p.outcome, "status": o.status}
                if p.reason:
                    done["reason"] = p.reason
                yield ended(rid, s, r, {"duration_seconds": o.duration}, done)


# How a request's payment ended, as the event that tells it.
_ENDS: dict[str, type[Event]] = {
    "delivered": PaymentDelivered,
    "redeemed": PaymentDelivered,
    "credited": PaymentCredited,
    "refunded": PaymentRefunded,
    "released": PaymentReleased,
    "settle_failed": PaymentSettleFailed,
}


def _spawn(awaitable: Any) -> None:
    import asyncio

    task = asyncio.ensure_future(awaitable)
    _pending.add(task)
    task.add_done_callback(_finished)


_pending: set[Any] = set()


def _finished(task: Any) -> None:
    _pending.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("event handler failed: %r", task.exception())
