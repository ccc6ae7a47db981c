"""Raw-socket HTTP/1.1 for the security tests: exact bytes out, every response framed back."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass
class RawResponse:
    """One response as framed by a strict reader (lower-case header names)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    complete: bool = True

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def header_list(self, name: bytes) -> list[bytes]:
        return [v for k, v in self.headers if k == name]

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class Exchange:
    """Everything that came back on one connection."""

    responses: list[RawResponse]
    leftover: bytes  # bytes that do not start a well-framed response
    closed: bool  # the server closed the connection
    raw: bytes = field(repr=False, default=b"")

    @property
    def statuses(self) -> list[int]:
        return [r.status for r in self.responses]


def parse_responses(
    data: bytes, *, eof: bool, head_requests: int = 0
) -> tuple[list[RawResponse], bytes]:
    """Frame `data` as a sequence of responses; an unterminated last one is marked incomplete."""
    out: list[RawResponse] = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\r\n\r\n", pos)
        if end < 0 or not data.startswith(b"HTTP/1.", pos):
            break
        lines = data[pos:end].split(b"\r\n")
        try:
            status = int(lines[0][9:12])
        except ValueError:
            break
        headers: list[tuple[bytes, bytes]] = []
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers.append((name.strip().lower(), value.strip()))
        pos = end + 4
        if 100 <= status < 200:
            continue
        names = dict(headers)
        no_body = status in (204, 304) or len(out) < head_requests
        if no_body:
            out.append(RawResponse(status, headers, b""))
        elif b"chunked" in names.get(b"transfer-encoding", b"").lower():
            body, pos, complete = _dechunk(data, pos)
            out.append(RawResponse(status, headers, body, complete))
            if not complete:
                return out, b""
        elif b"content-length" in names:
            n = int(names[b"content-length"])
            body = data[pos : pos + n]
            complete = len(body) == n
            out.append(RawResponse(status, headers, body, complete))
            pos += len(body)
            if not complete:
                return out, b""
        else:
            out.append(RawResponse(status, headers, data[pos:], eof))
            return out, b""
    return out, data[pos:]


def _dechunk(data: bytes, pos: int) -> tuple[bytes, int, bool]:
    body = bytearray()
    while True:
        eol = data.find(b"\r\n", pos)
        if eol < 0:
            return bytes(body), len(data), False
        try:
            size = int(data[pos:eol].split(b";")[0], 16)
        except ValueError:
            return bytes(body), len(data), False
        pos = eol + 2
        if size == 0:
            end = data.find(b"\r\n\r\n", pos - 2)
            if end < 0:
                return bytes(body), len(data), False
            return bytes(body), end + 4, True
        if len(data) < pos + size + 2:
            body += data[pos : pos + size]
            return bytes(body), len(data), False
        body += data[pos : pos + size]
        pos += size + 2


class Wire:
    """One TCP connection to the proxy that sends exactly the bytes given."""

    def __init__(self, port: int, *, rcvbuf: int | None = None) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Before connect, so the advertised window is small from the start.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_until_quiet(self, *, quiet: float = 0.4, limit: float = 10.0) -> bytes:
        """Read until the server closes, or sends nothing more for `quiet` seconds."""
        deadline = time.monotonic() + limit
        while not self.closed and time.monotonic() < deadline:
            self.sock.settimeout(quiet)
            try:
                data = self.sock.recv(1 << 20)
            except TimeoutError:
                break
            except ConnectionResetError:
                self.closed = True
                break
            if not data:
                self.closed = True
                break
            self.buf += data
        return self.buf

    def responses(self, *, quiet: float = 0.4, head_requests: int = 0) -> Exchange:
        """Everything received so far and until quiet, framed."""
        raw = self.read_until_quiet(quiet=quiet)
        responses, leftover = parse_responses(raw, eof=self.closed, head_requests=head_requests)
        return Exchange(responses, leftover, self.closed, raw)

    def wait_closed(self, limit: float = 10.0) -> bool:
        """Drain until the server closes the connection (True) or `limit` passes (False)."""
        deadline = time.monotonic() + limit
        while not self.closed and time.monotonic() < deadline:
            self.read_until_quiet(quiet=0.2, limit=0.5)
        return self.closed

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Wire:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def exchange(port: int, data: bytes, *, quiet: float = 0.4, head_requests: int = 0) -> Exchange:
    """Send `data` on a fresh connection and frame whatever comes back."""
    with Wire(port) as w:
        w.send(data)
        return w.responses(quiet=quiet, head_requests=head_requests)


def request(method: str, target: str, *headers: str, body: bytes = b"") -> bytes:
    """A request in exact bytes: `headers` are raw "Name: value" lines (Host is added first)."""
    lines = [f"{method} {target} HTTP/1.1", "Host: gateway.test", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
