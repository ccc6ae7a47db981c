"""Core test harness: the proxy served in-process by uvicorn on a port-0 socket, configs in code."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from mpp_proxy.config.model import Config, ProxySettings, Route, Service, Timeouts
from tests.support.served import Served

__all__ = [
    "Served",
    "assert_streamed_one_by_one",
    "config",
    "event_arrivals",
    "service",
    "wait_for",
]

ANY_ROUTES = (Route(method="*", pattern="/*"),)


def service(sid: str, base_url: str, **kwargs: Any) -> Service:
    kwargs.setdefault("routes", ANY_ROUTES)
    kwargs.setdefault("timeouts", Timeouts(connect=2.0, read=5.0, write=5.0, pool=2.0))
    return Service(id=sid, base_url=base_url, **kwargs)


def config(*services: Service) -> Config:
    return Config(proxy=ProxySettings(state="memory://"), services=services)


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def event_arrivals(chunks: Iterator[bytes]) -> list[tuple[float, bytes]]:
    """(arrival time, event) for each SSE event read from a raw byte stream."""
    out: list[tuple[float, bytes]] = []
    pending = b""
    for chunk in chunks:
        now = time.monotonic()
        pending += chunk
        *events, pending = pending.split(b"\n\n")
        out += [(now, e + b"\n\n") for e in events]
    return out


def assert_streamed_one_by_one(arrivals: list[tuple[float, bytes]], start: float, n: int) -> None:
    """Events spread over time, not one batch at the end. A loaded machine may merge a pair,
    so the checks are relative: most events arrive at distinct times, and the first one arrives
    early in the stream rather than with the last.
    """
    assert [e for _, e in arrivals] == [b"data: %d\n\n" % i for i in range(n)]
    assert len({t for t, _ in arrivals}) >= n // 2 + 1
    first, last = arrivals[0][0], arrivals[-1][0]
    assert last - first > 0.5 * (last - start)
