"""Drain state: whether this process is shutting down, as told by the serving main process.

`mpp-proxy serve` runs granian, whose main process forks the workers that answer requests. On
SIGTERM every worker must turn `/readyz` to 503 at once while it keeps serving, so a load
balancer stops sending new traffic before the listener closes. The main process holds the write
ends of two pipes that the workers inherit when they are forked; closing a write end is a
broadcast that each worker's event loop sees as end-of-file at once, with no polling and nothing
added to the request path:

- the drain pipe closes on SIGTERM: `draining()` turns True and `/readyz` answers 503;
- the stop pipe closes when the main process stops the workers (after the drain period): each
  worker then gives its in-flight requests `graceful_timeout` seconds and cancels the rest, so a
  paid request still running is credited by the payment gate rather than cut off unrecorded.

A worker forked after a pipe closed (a reload during the drain) sees the end-of-file at once.
Without `mpp-proxy serve` (the app embedded, or granian run directly) nothing is inherited and
`draining()` stays False unless the host calls `begin()`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from types import CodeType
from typing import Any

log = logging.getLogger("mpp_proxy.drain")

_draining = False


def draining() -> bool:
    """True once this process was told to drain: readiness answers 503 from then on."""
    return _draining


def begin() -> None:
    """Mark this process as draining (the drain pipe's end-of-file, or an embedding host)."""
    global _draining
    _draining = True


class _Pipe:
    """A one-shot broadcast from the main process to its forked workers: close = fire."""

    __slots__ = ("read_fd", "write_fd")

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()

    def fire(self) -> None:
        """In the main process: every reader of the pipe sees end-of-file."""
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def listen(self, loop: asyncio.AbstractEventLoop, callback: Callable[[], None]) -> None:
        """In a worker: drop the inherited write end, then call `callback` once at end-of-file."""
        self.fire()  # our copy of the write end would keep the pipe open forever

        def readable() -> None:
            if not os.read(self.read_fd, 1):
                loop.remove_reader(self.read_fd)
                callback()

        loop.add_reader(self.read_fd, readable)


class DrainSignal:
    """Made by `serve` in the main process before granian forks its workers."""

    def __init__(self, graceful_timeout: float) -> None:
        self.graceful_timeout = graceful_timeout
        self.drain = _Pipe()
        self.stop = _Pipe()

    def announce(self) -> None:
        """SIGTERM arrived: every worker turns not-ready (and keeps serving)."""
        begin()
        self.drain.fire()

    def stopping(self) -> None:
        """The workers are being stopped: their graceful timeout starts now."""
        self.announce()
        self.stop.fire()


# Set in the main process and inherited, with the pipes, by every forked worker.
_signal: DrainSignal | None = None
_watched = False


def share(graceful_timeout: float) -> DrainSignal:
    """In the main process, before the workers are forked: the signal they will listen to."""
    global _signal
    _signal = DrainSignal(graceful_timeout)
    return _signal


def watch() -> None:
    """In a worker, on the running loop (lifespan startup): act on the inherited signal."""
    global _watched
    shared = _signal
    if shared is None or _watched:
        return
    _watched = True
    loop = asyncio.get_running_loop()
    shared.drain.listen(loop, begin)

    def stop() -> None:
        begin()
        loop.call_later(shared.graceful_timeout, cancel_requests, loop)

    shared.stop.listen(loop, stop)


def _request_code() -> CodeType | None:
    """The code of granian's per-request coroutine: every request task runs one."""
    try:
        from granian import _futures
    except ImportError:
        return None
    wrapper: Any = _futures._future_watcher_wrapper
    code: CodeType = wrapper(None).__code__
    return code


def cancel_requests(loop: asyncio.AbstractEventLoop) -> int:
    """Cancel the request tasks still running: their exchanges record the outcome (credit)."""
    code = _request_code()
    cancelled = 0
    for task in asyncio.all_tasks(loop):
        coro = task.get_coro()
        if code is not None and getattr(coro, "cr_code", None) is code:
            task.cancel()
            cancelled += 1
    if cancelled:
        log.warning("graceful timeout reached: cancelled %d request(s) still running", cancelled)
    return cancelled
