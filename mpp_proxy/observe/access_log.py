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
from mpp_proxy.observe.outcome import Outcome
from mpp_proxy.state.query import display_amount


class AccessLog:
    """Formats outcomes and writes them to a file descriptor (stdout by default)."""

    __slots__ = (
        "_buffer",
        "_clock",
        "_decimals",
        "_fd",
        "_format",
        "_paths",
        "_query",
        "_second",
    )

    def __init__(self, config: Config, fd: int = 1) -> None:
        settings = config.observe.log
        self._format = self._json if settings.format == "json" else self._text
        self._query = settings.log_query
        self._decimals = {m.name: m.decimals for m in config.methods}
        self._buffer: list[str] = []
        self._fd = fd
        self._clock = time.time() - time.perf_counter()  # perf_counter -> unix seconds
        self._second = (0, "")  # the last whole second formatted, and its text
        # Paths seen, and whether they can go into a JSON string as they are (most repeat).
        self._paths: dict[str, bool] = {}

    def stamp(self, ts: float) -> str:
        """ISO 8601 UTC with milliseconds; the seconds part is formatted once per second."""
        whole = int(ts)
        second, text = self._second
        if whole != second:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
            self._second = (whole, text)
        return text + _MILLIS[int((ts - whole) * 1000)]

    def record_all(self, outcomes: list[Outcome]) -> None:
        """Format and write a batch of outcomes."""
        self._clock = time.time() - time.perf_counter()
        fmt = self._format
        self._buffer.extend([fmt(o) for o in outcomes])
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

    def _json(self, o: Outcome) -> str:
        """A plain answer's line from a template (nothing in it needs escaping: the path is
        checked once per distinct path); anything more through `fields` and orjson."""
        path = o.path
        plain = self._paths.get(path)
        if plain is None:
            plain = _plain(path)
            if len(self._paths) < _PATHS_KEPT:
                self._paths[path] = plain
        if o.extra is not None or self._query or not plain:
            return orjson.dumps(self.fields(o), option=orjson.OPT_APPEND_NEWLINE).decode()
        ts = o.ended + self._clock
        whole = int(ts)
        second, text = self._second
        if whole != second:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
            self._second = (whole, text)
        client = o.scope.get("client")
        upstream = o.upstream
        # Milliseconds with 3 decimals from integer microseconds: %.3f on a float goes through
        # the shortest-repr machinery and costs several times more.
        us = int(o.duration * 1_000_000)
        up = -1 if upstream is None else int(upstream * 1_000_000)
        return (_LINE if up >= 0 else _LINE_LOCAL) % (
            text,
            _MILLIS[int((ts - whole) * 1000)],
            o.rid.decode("latin-1"),
            client[0] if client else "",
            o.method,
            path,
            o.stats.json_labels,
            o.status,
            "upstream" if o.upstream_answered else "proxy",
            o.bytes_in,
            o.bytes_out,
            us // 1000,
            us % 1000,
            up // 1000,
            up % 1000,
        )

    def fields(self, o: Outcome) -> dict[str, Any]:
        """The line's fields, in the order they are written."""
        upstream = o.upstream
        stats = o.stats
        client = o.scope.get("client")
        line: dict[str, Any] = {
            "time": self.stamp(o.ended + self._clock),
            "request_id": o.rid.decode("latin-1"),
            "client": client[0] if client else "",
            "method": o.method,
            "path": o.path,
            "service": stats.service,
            "route": stats.route,
            "status": o.status,
            "source": "upstream" if o.upstream_answered else "proxy",
            "bytes_in": o.bytes_in,
            "bytes_out": o.bytes_out,
            # round(x, 3) goes through a decimal string; this is ~10 times cheaper.
            "duration_ms": int(o.duration * 1_000_000 + 0.5) / 1000,
            "upstream_ms": None if upstream is None else int(upstream * 1_000_000 + 0.5) / 1000,
            "error": o.error or None,
        }
        if self._query and o.scope.get("query_string"):
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
            f"{self.stamp(o.ended + self._clock)} {o.client or '-'} {o.request_id} "
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


# ".000Z" .. ".999Z": the end of every timestamp, made once.
_MILLIS = tuple(f".{ms:03d}Z" for ms in range(1000))
# A plain answer's line: the same fields, in the same order, as `fields` gives orjson.
_LINE = (
    '{"time":"%s%s","request_id":"%s","client":"%s","method":"%s","path":"%s",%s,'
    '"status":%d,"source":"%s","bytes_in":%d,"bytes_out":%d,"duration_ms":%d.%03d,'
    '"upstream_ms":%d.%03d,"error":null}\n'
)
# The same for an answer that was not forwarded (no upstream time; the last two unused).
_LINE_LOCAL = _LINE.replace('"upstream_ms":%d.%03d', '"upstream_ms":null%.0s%.0s')
# Distinct paths whose check is remembered (a route with :params has many).
_PATHS_KEPT = 4096


def _plain(path: str) -> bool:
    """Nothing in `path` needs escaping in a JSON string."""
    return path.isprintable() and path.isascii() and '"' not in path and "\\" not in path
