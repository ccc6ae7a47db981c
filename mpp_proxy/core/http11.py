"""Sans-I/O HTTP/1.1 client codec: request heads and body framing out, responses parsed in.

h11 spent ~58 µs per exchange on this machine (most of the core's CPU per request); this codec
does the same job for the one role we need (a client talking to an upstream) in a few µs.
It is strict where framing is concerned, because a connection is only reused when the previous
response was delimited exactly.

h11 is the oracle (tests/core/test_core_codec_h11.py): what h11 refuses, we refuse; what we
accept, we read as h11 does. We are stricter than h11 on purpose in these ways only: obs-fold
lines, bare-LF line ends and control characters other than HTAB in field values and reason
phrases are refused; so are versions other than HTTP/1.x and chunk sizes of more than 16 hex
digits; and a response with both transfer-encoding and content-length never leaves its
connection for reuse. The head (and trailer section) limit is 64 KiB, a chunk-size line's 4 KiB.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from mpp_proxy.core.types import HeaderList

MAX_HEAD_BYTES = 64 * 1024
_MAX_CHUNK_LINE = 4096
# Header names are RFC 9110 tokens; values carry no control characters but HTAB (so no CR/LF
# header injection either).
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# The same rules for a whole block of response header lines at once, in C (per-line Python
# checks were most of the parsing cost). Anchored at line starts, a bad line cannot match (and
# no match spans two lines), so the block is valid when every line matched.
_HEADER_LINES = re.compile(
    rb"^([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*)\r\n", re.MULTILINE
)
# A status line as h11 reads one, but with no control characters in the reason phrase (the
# rule for field values): an HTTP/1.x version, three digits, an optional reason.
_STATUS_LINE = re.compile(rb"HTTP/1\.([0-9]) ([0-9]{3})(?: [^\x00-\x08\x0a-\x1f\x7f]*)?")
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f]")
# A chunk-size line as h11 reads one (trailing whitespace tolerated, an extension ignored but
# for a bare LF in it), with at most 16 hex digits where h11 takes 20.
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:;[^\n]*|[ \t]*)")


class ProtocolError(Exception):
    """The upstream sent something that is not a well-framed HTTP/1.1 response."""


class RequestError(ValueError):
    """The request cannot be written safely (bad method, target or header)."""


def check_head(method: bytes, target: bytes, headers: HeaderList) -> None:
    """What `encode_head` refuses, without encoding: a paid request is checked before payment."""
    if not _TOKEN.fullmatch(method) or _BAD_TARGET.search(target) or not target:
        raise RequestError("invalid request line")
    for name, value in headers:
        if _BAD_VALUE.search(value) or not _TOKEN.fullmatch(name):
            raise RequestError("invalid header")


def encode_head(method: bytes, target: bytes, headers: HeaderList) -> bytes:
    """Serialise a request head; names and values are checked, not trusted."""
    if not _TOKEN.fullmatch(method) or _BAD_TARGET.search(target) or not target:
        raise RequestError("invalid request line")
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        if _BAD_VALUE.search(value) or not _TOKEN.fullmatch(name):
            raise RequestError("invalid header")
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def encode_chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"


class Head(NamedTuple):
    status: int
    headers: HeaderList  # lower-case names, raw values, in order


_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})
# Body framing modes.
_NONE, _LENGTH, _CHUNKED, _CLOSE = 0, 1, 2, 3
# Chunked sub-states.
_SIZE, _DATA, _DATA_END, _TRAILER = 0, 1, 2, 3


class ResponseParser:
    """Parses one response per exchange; `start(head_only)` before each request is sent."""

    __slots__ = (
        "_buf",
        "_chunk_left",
        "_chunk_state",
        "_head_only",
        "_mode",
        "_remaining",
        "done",
        "keep_alive",
    )

    def __init__(self) -> None:
        self._buf = b""
        self._head_only = False
        self._mode = _NONE
        self._remaining = 0
        self._chunk_state = _SIZE
        self._chunk_left = 0
        self.done = False
        self.keep_alive = False

    def start(self, head_only: bool) -> None:
        self._buf = b""
        self._head_only = head_only
        self._mode = _NONE
        self._remaining = 0
        self._chunk_state = _SIZE
        self.done = False
        self.keep_alive = False

    @property
    def buffered(self) -> bool:
        return bool(self._buf)

    # ------------------------------------------------------------------ head

    def head(self, data: bytes) -> Head | None:
        """Add bytes; return the final (non-1xx) head once complete, else None."""
        buf = self._buf + data if self._buf else data
        while True:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_HEAD_BYTES:
                    raise ProtocolError("response head too large")
                self._buf = buf
                return None
            if end > MAX_HEAD_BYTES:
                raise ProtocolError("response head too large")
            raw = buf[: end + 2]  # through the CRLF ending the last line
            buf = buf[end + 4 :]
            status, version11, headers = _parse_head(raw)
            if status < 200:
                if status == 101:
                    raise ProtocolError("unexpected protocol switch")
                _framing(headers, version11)  # an interim head is held to the same field rules
                continue
            self._buf = buf
            self._frame(status, version11, headers)
            return Head(status, headers)

    def _frame(self, status: int, version11: bool, headers: HeaderList) -> None:
        length, chunked, close = _framing(headers, version11)
        if self._head_only or status in (204, 304):
            self._mode = _NONE
            self.done = True
        elif chunked:
            self._mode = _CHUNKED
        elif length is not None:
            self._mode = _LENGTH
            self._remaining = length
            if length == 0:
                self.done = True
        else:
            self._mode = _CLOSE
            close = True
        self.keep_alive = not close
        if self.done and self._buf:
            # Bytes after a complete response that nobody asked for: do not reuse.
            self.keep_alive = False

    # ------------------------------------------------------------------ body

    def body(self, data: bytes) -> tuple[bytes, bool]:
        """Add bytes (b"" to drain the buffer); return (body bytes available now, complete)."""
        if self.done:
            if data:
                self.keep_alive = False
            return b"", True
        mode = self._mode
        if mode == _LENGTH:
            buf = self._buf + data if self._buf else data
            self._buf = b""
            left = self._remaining
            if len(buf) < left:
                self._remaining = left - len(buf)
                return buf, False
            if len(buf) > left:
                self.keep_alive = False
                buf = buf[:left]
            self._remaining = 0
            self.done = True
            return buf, True
        if mode == _CHUNKED:
            return self._chunked(data)
        # _CLOSE: everything until EOF
        buf = self._buf + data if self._buf else data
        self._buf = b""
        return buf, False

    def eof(self) -> tuple[bytes, bool]:
        """The upstream closed its side. Complete only for close-delimited bodies."""
        if self.done:
            return b"", True
        if self._mode == _CLOSE:
            self.done = True
            self.keep_alive = False
            return b"", True
        raise ProtocolError("connection closed before the response ended")

    def _size_line(self, line: bytes) -> None:
        size = _chunk_size(line)
        if size == 0:
            self._chunk_state = _TRAILER
        else:
            self._chunk_left = size
            self._chunk_state = _DATA

    def _take(self, buf: bytes, pos: int, n: int, out: list[bytes]) -> int:
        """Chunk data from `pos`, up to what the chunk has left; the new position."""
        take = min(self._chunk_left, n - pos)
        out.append(buf[pos : pos + take])
        self._chunk_left -= take
        if self._chunk_left == 0:
            self._chunk_state = _DATA_END
        return pos + take

    def _chunked(self, data: bytes) -> tuple[bytes, bool]:
        buf = self._buf + data if self._buf else data
        out: list[bytes] = []
        pos = 0
        n = len(buf)
        while pos < n:
            state = self._chunk_state
            if state == _DATA:
                pos = self._take(buf, pos, n, out)
                continue
            if state == _DATA_END:
                if n - pos < 2:
                    break
                if buf[pos : pos + 2] != b"\r\n":
                    raise ProtocolError("chunk not followed by CRLF")
                pos += 2
                self._chunk_state = _SIZE
                continue
            if state == _TRAILER:
                end = _trailer_end(buf, pos)
                if end < 0:
                    break
                self.done = True
                self.keep_alive = self.keep_alive and end == n  # nothing may follow it
                self._buf = b""
                return b"".join(out), True
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                if n - pos > _MAX_CHUNK_LINE:
                    raise ProtocolError("chunk header too long")
                break
            self._size_line(buf[pos:eol])
            pos = eol + 2
        self._buf = buf[pos:] if pos < n else b""
        if len(out) == 1:
            return out[0], False
        return b"".join(out), False


def _chunk_size(line: bytes) -> int:
    """The size of a chunk from its size line (extensions after `;` are ignored)."""
    size = _CHUNK_SIZE.fullmatch(line)
    if size is None:
        raise ProtocolError("invalid chunk size")
    return int(size[1], 16)


def _trailer_end(buf: bytes, pos: int) -> int:
    """Where the trailer section at `pos` ends (past its blank line), or -1 while incomplete.

    Trailer fields are dropped, but checked first by the rules of header fields, as h11 checks
    them: a response with a malformed trailer is refused.
    """
    if buf.startswith(b"\r\n", pos):  # no trailer fields: the usual end of a chunked body
        return pos + 2
    end = buf.find(b"\r\n\r\n", pos)
    if end < 0:
        if len(buf) - pos > MAX_HEAD_BYTES:
            raise ProtocolError("trailer section too large")
        return -1
    _framing(_fields(buf, pos, end + 2), True)
    return end + 4


def _framing(headers: HeaderList, version11: bool) -> tuple[int | None, bool, bool]:
    """(content-length or None, chunked, connection closes after this response).

    The framing fields are checked as h11 checks them and, in the rare shapes h11 rewrites (a
    list of equal content-lengths, a repeated one, `Chunked`), tidied in place to what h11 gives:
    the header list we forward then carries one plain content-length.
    """
    length: bytes | None = None
    chunked = False
    close = not version11
    tidy = False
    for name, value in headers:
        if name not in _FRAMING:
            continue
        if name == b"content-length":
            tidy = tidy or length is not None or not value.isdigit()
            length = _content_length(value, length)
        elif name == b"transfer-encoding":
            if chunked or (value != b"chunked" and value.lower() != b"chunked"):
                raise ProtocolError("unsupported transfer-encoding")
            tidy = tidy or value != b"chunked"
            chunked = True
        elif version11 and b"close" in [t.strip().lower() for t in value.split(b",")]:
            # An HTTP/1.0 connection is never reused, whatever its Connection field says (as
            # h11 decides): keep-alive is an old extension, and 1.0 upstreams are rare.
            close = True
    if tidy:
        headers[:] = _tidied(headers)
    if chunked and length is not None:
        # Both framings: a smuggling shape. Trust chunked, never reuse the connection.
        return None, True, True
    return (None if length is None else int(length)), chunked, close


# h11 refuses a longer content-length (it would exceed any body anyway).
_MAX_LENGTH_DIGITS = 20


def _content_length(value: bytes, seen: bytes | None) -> bytes:
    """The digits of a content-length value (a list of equal values is one); `seen` is an
    earlier one. Equal means equal text, as for h11: "5" and "05" conflict."""
    if value.isdigit() and len(value) <= _MAX_LENGTH_DIGITS:  # the usual shape
        if seen is not None and value != seen:
            raise ProtocolError("conflicting content-length")
        return value
    for part in value.split(b","):
        part = part.strip()
        if not part.isdigit() or len(part) > _MAX_LENGTH_DIGITS:
            raise ProtocolError("invalid content-length")
        if seen is not None and part != seen:
            raise ProtocolError("conflicting content-length")
        seen = part
    assert seen is not None
    return seen


def _tidied(headers: HeaderList) -> HeaderList:
    """Checked framing fields as h11 gives them: the first content-length alone, as one value;
    transfer-encoding in lower case."""
    out: HeaderList = []
    seen_length = False
    for name, value in headers:
        if name == b"content-length":
            if seen_length:
                continue
            seen_length = True
            value = value.split(b",", 1)[0].strip()
        elif name == b"transfer-encoding":
            value = value.lower()
        out.append((name, value))
    return out


def _parse_head(raw: bytes) -> tuple[int, bool, HeaderList]:
    """Status line and header lines; `raw` ends with the CRLF of its last line."""
    eol = raw.find(b"\r\n")
    status_line = _STATUS_LINE.fullmatch(raw, 0, eol)
    if status_line is None:
        raise ProtocolError("invalid status line")
    status = int(status_line[2])
    if status < 100:
        raise ProtocolError("invalid status code")
    # HTTP/1.2 and later minor versions are read as 1.1 (RFC 9110 2.5), as h11 reads them.
    version11 = status_line[1] != b"0"
    return status, version11, _fields(raw, eol + 2, len(raw))


def _fields(raw: bytes, start: int, end: int) -> HeaderList:
    """The header (or trailer) lines in raw[start:end], which ends with its last line's CRLF."""
    lines = _HEADER_LINES.findall(raw, start, end)
    # Each match ends at the LF of its own line (values hold no CR or LF) and starts at a line
    # start: as many matches as LFs means every line, bare-LF ones included, matched whole.
    if raw.count(b"\n", start, end) != len(lines):
        _reject_header_lines(raw[start : end - 2])
    return [(name.lower(), value.rstrip(b" \t")) for name, value in lines]


def _reject_header_lines(block: bytes) -> None:
    """Name the first bad line's fault (the block did not match as a whole)."""
    for line in block.split(b"\r\n"):
        colon = line.find(b":")
        if colon <= 0:
            raise ProtocolError("invalid header line")
        if not _TOKEN.fullmatch(line[:colon]):  # also rejects obs-fold, space before the colon
            raise ProtocolError("invalid header name")
        if _BAD_VALUE.search(line[colon + 1 :]):
            raise ProtocolError("invalid header value")
    raise ProtocolError("invalid header line")
