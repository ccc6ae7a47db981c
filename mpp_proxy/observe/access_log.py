"""The access log: one line per request (JSON or text) on stdout, written in batches.

The observer hands over the outcomes of the last flush period at once: they are formatted
in one loop and written with one write, instead of a call and a syscall per request. What
goes in a line is only what the outcome record holds: no header, no credential, and the
query only with `log_query`.
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson

from mpp_proxy.config.model import Config
from mpp_proxy.observe.outcome import Outcome, RouteStats
from mpp_proxy.state.query import display_amount


class AccessLog:
    """Formats outcomes and writes them to a file descriptor (stdout by default)."""

    __slots__ = (
        "_buffer",
        "_clock",
        "_decimals",
        "_fd",
        "_lines",
        "_middles",
        "_query",
        "_second",
    )

    def __init__(self, config: Config, fd: int = 1) -> None:
        settings = config.observe.log
        self._lines = self._json_lines if settings.format == "json" else self._text_lines
        self._query = settings.log_query
        self._decimals = {m.name: m.decimals for m in config.methods}
        self._buffer: list[str] = []
        self._fd = fd
        self._clock = _clock()
        self._second = (0, "")  # the last whole second formatted, and its text
        # Plain lines' middles by (path, method, client, route, status, source): most repeat.
        self._middles: dict[tuple[str, str, str, RouteStats, int, bool], str] = {}

    def stamp(self, ended_ns: int) -> str:
        """ISO 8601 UTC with milliseconds of a perf_counter_ns() reading; the seconds part is
        formatted once per second."""
        ms = (ended_ns + self._clock) // 1_000_000
        whole = ms // 1000
        second, text = self._second
        if whole != second:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
            self._second = (whole, text)
        return text + _MILLIS[ms - whole * 1000]

    def record_all(self, outcomes: list[Outcome]) -> None:
        """Format and write a batch of outcomes."""
        self._clock = _clock()
        self._buffer.extend(self._lines(outcomes))
        self.flush()

    def flush(self) -> None:
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

    def _text_lines(self, outcomes: list[Outcome]) -> list[str]:
        return [self._text(o) for o in outcomes]

    def _json_lines(self, outcomes: list[Outcome]) -> list[str]:
        """The lines of a batch. A plain answer's line is a kept middle (client, method, path,
        route, status, source: made once per distinct combination) and an f-string (half the
        cost of the same template with %), in one loop with the outcome unpacked once;
        anything more than a plain answer goes through `fields` and orjson."""
        lines: list[str] = []
        add = lines.append
        full, middles, clock, query = self._full, self._middles, self._clock, self._query
        second, text = self._second
        # Where this second began on the perf_counter_ns() clock: a line's offset in it is one
        # subtraction of two clock readings, the rest small-integer arithmetic.
        origin = second * 1_000_000_000 - clock
        thousandths, millis = _THOUSANDTHS, _MILLIS
        for o in outcomes:
            (
                stats,
                rid,
                client,
                _,
                method,
                path,
                status,
                answered,
                bytes_in,
                bytes_out,
                duration,
                upstream,
                extra,
                ended,
            ) = o
            if extra is not None or query:
                add(full(o))
                continue
            key = (path, method, client, stats, status, answered)
            middle = middles.get(key) or self._middle(key)
            if middle is None:
                add(full(o))
                continue
            at = ended - origin
            if not 0 <= at < 1_000_000_000:
                second = (ended + clock) // 1_000_000_000
                text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
                origin = second * 1_000_000_000 - clock
                at = ended - origin
            # Times are integers (microseconds, nanoseconds): milliseconds with 3 decimals are
            # the whole part and a kept "000".."999" (under callgrind ~1.8k instructions each,
            # against ~2.4k for a float written with `:.3f`, ~0.9k more to make the float).
            up = (
                "null" if upstream is None else f"{upstream // 1000}.{thousandths[upstream % 1000]}"
            )
            add(
                f'{{"time":"{text}{millis[at // 1_000_000]}",'
                f'"request_id":"{rid.decode("latin-1")}{middle}{bytes_in},'
                f'"bytes_out":{bytes_out},'
                f'"duration_ms":{duration // 1000}.{thousandths[duration % 1000]},'
                f'"upstream_ms":{up},"error":null}}\n'
            )
        self._second = (second, text)
        return lines

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
            "duration_ms": o.duration_us / 1000,
            "upstream_ms": None if upstream is None else upstream / 1000,
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


# ".000Z" .. ".999Z": the end of every timestamp, made once; "000" .. "999" likewise.
_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))
_THOUSANDTHS = tuple(f"{n:03d}" for n in range(1000))


def _clock() -> int:
    """What turns a perf_counter_ns() reading into unix nanoseconds (read now and then: the
    wall clock may be stepped)."""
    return time.time_ns() - time.perf_counter_ns()


# Distinct (path, method, client, route, status, source) whose line middle is kept.
_MIDDLES_KEPT = 4096


def _plain(path: str) -> bool:
    """Nothing in `path` needs escaping in a JSON string."""
    return path.isprintable() and path.isascii() and '"' not in path and "\\" not in path
