"""The access log: one line per request (JSON or text) on stdout, written in batches.

A request's line is formatted when it ends, into a buffer that the observer's flush writes
out with one write every half second, instead of a syscall per request. What goes in a line
is only what the outcome record holds: no header, no credential, and the query only with
`log_query`.
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson

from mpp_proxy.config.model import Config
from mpp_proxy.observe.outcome import Outcome, PlainFields, RouteStats, new_outcome
from mpp_proxy.state.query import display_amount


class AccessLog:
    """Formats outcomes and writes them to a file descriptor (stdout by default)."""

    __slots__ = (
        "_buffer",
        "_clock",
        "_decimals",
        "_fd",
        "_json",
        "_middles",
        "_origin",
        "_query",
        "_second",
        "line",
    )

    def __init__(self, config: Config, fd: int = 1) -> None:
        settings = config.observe.log
        # A plain answer's line, from its fields and the time it ended.
        self._json = settings.format == "json"
        self.line = self._json_line if self._json else self._text_line
        self._query = settings.log_query
        self._decimals = {m.name: m.decimals for m in config.methods}
        self._buffer: list[str] = []
        self._fd = fd
        self._clock = _clock()
        # The whole second lines are in now: where it began on the perf_counter_ns() clock,
        # and its text (a line's offset in it is one subtraction of two clock readings).
        self._origin = _NO_SECOND
        self._second = ""
        # Plain lines' middles by (path, method, client, route, status, source): most repeat.
        self._middles: dict[tuple[str, str, str, RouteStats, int, bool], str] = {}

    def stamp(self, ended_ns: int) -> str:
        """ISO 8601 UTC with milliseconds of a perf_counter_ns() reading; the seconds part is
        formatted once per second."""
        at = ended_ns - self._origin
        if not 0 <= at < 1_000_000_000:
            at = self._new_second(ended_ns)
        return self._second + _MILLIS[at // 1_000_000]

    def _new_second(self, ended_ns: int) -> int:
        """Make the second `ended_ns` falls in the current one; the offset in it."""
        clock = self._clock
        whole = (ended_ns + clock) // 1_000_000_000
        self._second = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        self._origin = whole * 1_000_000_000 - clock
        return ended_ns - self._origin

    def record(self, o: Outcome) -> None:
        """One finished request's line, into the buffer the next flush writes."""
        if o.extra is None:
            self.line(o[:12], o.ended_ns)
        elif self._json:
            self._add(self._full(o))
        else:
            self._add(self._text(o))

    def _add(self, line: str) -> None:
        buffer = self._buffer
        buffer.append(line)
        if len(buffer) >= BUFFER_LIMIT:
            self.flush()

    def flush(self) -> None:
        """Write the buffered lines (one write), and read the wall clock again: it may have
        been stepped."""
        self._clock = _clock()
        self._origin = _NO_SECOND
        if not self._buffer:
            return
        data = "".join(self._buffer).encode("utf-8", "replace")
        self._buffer = []
        try:
            while data:
                written = os.write(self._fd, data)
                data = data[written:]
        except BlockingIOError:
            pass  # a full pipe: these lines are dropped rather than stall the event loop
        except OSError:
            pass

    def _text_line(self, fields: PlainFields, ended: int) -> None:
        self._add(self._text(new_outcome((*fields, None, ended))))

    def _json_line(self, fields: PlainFields, ended: int) -> None:
        """A plain answer's line: a kept middle (client, method, path, route, status, source:
        made once per distinct combination) and an f-string; a path that needs escaping, or
        a query to keep, goes through `fields` and orjson."""
        (
            stats, rid, client, query, method, path,
            status, answered, bytes_in, bytes_out, duration, upstream,
        ) = fields  # fmt: skip
        key = (path, method, client, stats, status, answered)
        middle = self._middles.get(key) or self._middle(key)
        if middle is None or (query and self._query):
            self._add(self._full(new_outcome((*fields, None, ended))))
            return
        at = ended - self._origin
        if not 0 <= at < 1_000_000_000:
            at = self._new_second(ended)
        # Durations are written as they are kept, integer microseconds: exact, and a third
        # of the cost of milliseconds with decimals.
        buffer = self._buffer
        if upstream is None:
            buffer.append(
                f'{{"time":"{self._second}{_MILLIS[at // 1_000_000]}",'
                f'"request_id":"{rid.decode("latin-1")}{middle}{bytes_in},'
                f'"bytes_out":{bytes_out},"duration_us":{duration},'
                '"upstream_us":null,"error":null}\n'
            )
        else:
            buffer.append(
                f'{{"time":"{self._second}{_MILLIS[at // 1_000_000]}",'
                f'"request_id":"{rid.decode("latin-1")}{middle}{bytes_in},'
                f'"bytes_out":{bytes_out},"duration_us":{duration},'
                f'"upstream_us":{upstream},"error":null}}\n'
            )
        if len(buffer) >= BUFFER_LIMIT:
            self.flush()

    def _middle(self, key: tuple[str, str, str, RouteStats, int, bool]) -> str | None:
        """The part of a plain line from the client to `"bytes_in":`, kept for the next lines
        with the same key; None when the path needs escaping (such lines go through orjson)."""
        path, method, client, stats, status, upstream = key
        if not _plain(path):
            return None
        middle = (
            f'","client":"{client}","method":"{method}","path":"{path}",{stats.json_labels},'
            f'"status":{status},"source":"{"upstream" if upstream else "proxy"}","bytes_in":'
        )
        if len(self._middles) >= _MIDDLES_KEPT:
            self._middles.clear()  # many clients or paths: start over rather than grow
        self._middles[key] = middle
        return middle

    def _full(self, o: Outcome) -> str:
        return orjson.dumps(self.fields(o), option=orjson.OPT_APPEND_NEWLINE).decode()

    def fields(self, o: Outcome) -> dict[str, Any]:
        """The line's fields, in the order they are written."""
        upstream = o.upstream_us
        stats = o.stats
        line: dict[str, Any] = {
            "time": self.stamp(o.ended_ns),
            "request_id": o.rid.decode("latin-1"),
            "client": o.client,
            "method": o.method,
            "path": o.path,
            "service": stats.service,
            "route": stats.route,
            "status": o.status,
            "source": "upstream" if o.upstream_answered else "proxy",
            "bytes_in": o.bytes_in,
            "bytes_out": o.bytes_out,
            "duration_us": o.duration_us,
            "upstream_us": upstream,
            "error": o.error or None,
        }
        if self._query and o.query_string:
            line["query"] = o.query
        if not (o.problem or o.payment is not None or o.refused is not None):
            return line
        if o.problem:
            line["problem"] = o.problem
        p = o.payment
        if p is not None:
            line["payment"] = {
                "method": p.method,
                "amount": self.display(p.method, p.amount),
                "currency": p.currency,
                "outcome": p.outcome,
                "reference": p.reference,
                "payer": p.payer,
            }
            if p.reason:
                line["payment"]["reason"] = p.reason
        elif o.refused is not None:
            line["payment"] = {"outcome": o.refused[0], "method": o.refused[1] or None}
        return line

    def display(self, method: str, amount: str) -> str:
        return display_amount(amount, self._decimals.get(method, 0))

    def _text(self, o: Outcome) -> str:
        upstream = "-" if o.upstream is None else f"{o.upstream * 1000:.1f}ms"
        text = (
            f"{self.stamp(o.ended_ns)} {o.client or '-'} {o.request_id} "
            f'"{o.method} {o.path}" {o.status} {o.source} {o.bytes_in} {o.bytes_out} '
            f"{o.duration * 1000:.1f}ms upstream={upstream}"
        )
        if o.service:
            text += f" service={o.service} route={o.route!r}"
        if o.error:
            text += f" error={o.error}"
        p = o.payment
        if p is not None:
            amount = self.display(p.method, p.amount)
            text += (
                f" paid={amount} {p.currency} via {p.method} outcome={p.outcome}"
                f" reference={p.reference}"
            )
        return text + "\n"


# Lines held for the next flush at most (a burst is written out early).
BUFFER_LIMIT = 4096
# No second yet (or the clock was read again): the next line makes its own.
_NO_SECOND = -(1 << 62)
# ".000Z" .. ".999Z": the end of every timestamp, made once.
_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))


def _clock() -> int:
    """What turns a perf_counter_ns() reading into unix nanoseconds (read now and then: the
    wall clock may be stepped)."""
    return time.time_ns() - time.perf_counter_ns()


# Distinct (path, method, client, route, status, source) whose line middle is kept.
_MIDDLES_KEPT = 4096


def _plain(path: str) -> bool:
    """Nothing in `path` needs escaping in a JSON string."""
    return path.isprintable() and path.isascii() and '"' not in path and "\\" not in path
