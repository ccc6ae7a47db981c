"""The response parser against h11: generated upstream responses, cut anywhere, fed to both.

Wherever h11 (as a client) refuses a response, `ResponseParser` refuses it too; wherever we accept
one, the status, the header list, the body bytes and the reuse decision are h11's. We are stricter
than h11 in a few named ways (`STRICTER_REFUSALS`, `STRICTER_NO_REUSE`), and in nothing else.

Three properties draw responses with at most one kind of flaw each (heads, chunked bodies, and
unflawed ones for the reuse decision); a fourth runs every listed flaw shape (`FLAWS`) in a few
otherwise plain responses, so that none is left to chance. About 1,200 examples, ~10 s of CPU.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import h11
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from mpp_proxy.core.http11 import ProtocolError, ResponseParser


def examples(n: int) -> settings:
    """A profile for these properties: n examples each, about 7 ms of CPU apiece here."""
    return settings(
        max_examples=n,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# ------------------------------------------------------------------ what we are stricter about

OBS_FOLD = "obs-fold continuation line (RFC 9112 5.2: a recipient may reject it)"
BARE_LF = "bare LF ending a head or trailer line (RFC 9112 2.2: CRLF is the line terminator)"
LONG_CHUNK_SIZE = "chunk size written with more than 16 hex digits"
CONTROL_CHARACTER = "control character other than HTAB in a field value or reason phrase"
NOT_HTTP_1 = "a version other than HTTP/1.x in a status line"
BOTH_FRAMINGS = "transfer-encoding and content-length in one response: never reused"


def _has_control(value: bytes) -> bool:
    return any((c < 0x20 and c != 0x09) or c == 0x7F for c in value)


@dataclass
class Case:
    """One generated upstream exchange, and the h11-tolerated shapes the generator put in it."""

    raw: bytes
    head_only: bool
    cuts: list[int]
    shapes: set[str] = field(default_factory=set)

    def pieces(self) -> list[bytes]:
        cuts = sorted({c for c in self.cuts if 0 < c < len(self.raw)})
        ends = [*cuts, len(self.raw)]
        return [self.raw[a:b] for a, b in zip([0, *cuts], ends, strict=True)]


@dataclass
class Accepted:
    """What a parser made of a response it accepted; `reusable` is judged before the EOF."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    reusable: bool


@dataclass
class H11Accepted(Accepted):
    """h11's reading, with what it tolerated on the way (interim heads, trailers)."""

    versions: list[bytes] = field(default_factory=list)
    reasons: list[bytes] = field(default_factory=list)
    fields: list[tuple[bytes, bytes]] = field(default_factory=list)


def ours(case: Case) -> Accepted | None:
    """Drive `ResponseParser` the way the upstream connection does; None when it refuses."""
    p = ResponseParser()
    p.start(case.head_only)
    head = None
    body = bytearray()
    try:
        # Bytes that come after the end of the response are fed too: the connection's
        # reader would see them (they make it unclean), and the parser must not reuse it.
        for piece in case.pieces():
            if head is None:
                head = p.head(piece)
                if head is None:
                    continue
                piece = b""
            chunk, _ = p.body(piece)
            body += chunk
        reusable = head is not None and p.done and p.keep_alive
        chunk, done = p.eof()  # the upstream closes its side after the last byte
        body += chunk
    except ProtocolError:
        return None
    assert head is not None
    assert done
    return Accepted(head.status, head.headers, bytes(body), reusable)


def theirs(case: Case) -> H11Accepted | None:
    """h11 as a client that sent one request; None when it raises RemoteProtocolError."""
    # No size limit of h11's own: head and chunk-line limits are pinned in test_core_codec.py.
    conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=1 << 20)
    method = b"HEAD" if case.head_only else b"GET"
    conn.send(h11.Request(method=method, target=b"/", headers=[(b"host", b"upstream")]))
    conn.send(h11.EndOfMessage())
    got = H11Accepted(0, [], b"", False)
    body = bytearray()
    ended = False

    def drain() -> None:
        # A client reads events up to the end of its response, and no further: what follows is
        # judged by the reuse decision (h11 raises on it only when asked for the next event).
        nonlocal ended
        while not ended:
            event = conn.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.InformationalResponse | h11.Response):
                got.versions.append(event.http_version)
                got.reasons.append(event.reason)
                got.fields += list(event.headers)
                if isinstance(event, h11.Response):
                    got.status = event.status_code
                    got.headers = list(event.headers)
            elif isinstance(event, h11.Data):
                body.extend(event.data)
            elif isinstance(event, h11.EndOfMessage):
                got.fields += list(event.headers)
                ended = True
            elif isinstance(event, h11.ConnectionClosed):
                return

    try:
        for piece in case.pieces():
            conn.receive_data(piece)
            drain()
        got.reusable = (
            conn.our_state is h11.DONE
            and conn.their_state is h11.DONE
            and not conn.trailing_data[0]
        )
        conn.receive_data(b"")
        drain()
    except h11.RemoteProtocolError:
        return None
    assert ended
    got.body = bytes(body)
    return got


def _lower(headers: list[tuple[bytes, bytes]]) -> set[bytes]:
    return {name for name, _ in headers}


# Each stricter refusal, and how to tell from the case and h11's reading that it applies.
STRICTER_REFUSALS: dict[str, Callable[[Case, H11Accepted], bool]] = {
    OBS_FOLD: lambda case, ref: OBS_FOLD in case.shapes,
    BARE_LF: lambda case, ref: BARE_LF in case.shapes,
    LONG_CHUNK_SIZE: lambda case, ref: LONG_CHUNK_SIZE in case.shapes,
    CONTROL_CHARACTER: lambda case, ref: (
        any(_has_control(v) for _, v in ref.fields) or any(_has_control(r) for r in ref.reasons)
    ),
    NOT_HTTP_1: lambda case, ref: any(not v.startswith(b"1.") for v in ref.versions),
}
STRICTER_NO_REUSE: dict[str, Callable[[Case, H11Accepted], bool]] = {
    BOTH_FRAMINGS: lambda case, ref: (
        {b"content-length", b"transfer-encoding"} <= _lower(ref.headers)
    ),
}


def check_against_h11(case: Case) -> None:
    note(f"raw={case.raw!r} head_only={case.head_only} pieces={case.pieces()!r}")
    ref = theirs(case)
    got = ours(case)
    if ref is None:
        assert got is None, "h11 refuses this response; we accepted it"
        return
    if got is None:
        allowed = [name for name, applies in STRICTER_REFUSALS.items() if applies(case, ref)]
        assert allowed, "we refuse a response h11 accepts, for no documented reason"
        return
    assert got.status == ref.status
    assert got.headers == ref.headers
    assert got.body == ref.body
    if got.reusable != ref.reusable:
        allowed = [name for name, applies in STRICTER_NO_REUSE.items() if applies(case, ref)]
        assert ref.reusable, "we would reuse a connection h11 would not"
        assert allowed, "we decline reuse where h11 reuses, for no documented reason"


# ------------------------------------------------------------------ generators

T = TypeVar("T")

TOKEN = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
# Bytes a hostile value is made of: text, separators, obs-text and every kind of control.
NASTY = b'aZ9 \t,;="/:\x80\xe9\xff\x00\x01\x08\x0b\x0c\x0e\x1f\x7f\r\n'

# Each kind of flaw, and its shapes: malformed, or odd in a way that has an edge. None stands
# for random NASTY bytes. In templates, # is the number (hex for chunk sizes), = the number
# zero-padded to 20 digits (16 for chunk sizes) and ^ the hex number in upper case.
FLAWS: dict[str, list[Any]] = {
    "name": [b"", b"X A", b"X(A)", b"X\x00", b"\xe9t\xe9", b"X/A", b"X@A", b"X-A\r", b" X"],
    # (before the colon, after it, after the value)
    "spacing": [(b" ", b" ", b""), (b"\t", b"", b"")],
    "value": [b"\x00", b"a\rb", b"a\nb", b"\x01", b"\x7f", b"\x0b", b"\x0c", b"a\r\n b", None],
    "fold": [b" folded", b"\tmore", b"  "],
    "junk": [b"no colon", b"X-A:\x00", b"X-A: a\rb", b":v", b"X-A: 1\r\n\r", b"X-A\x7f: 1"],
    "eol": [b"\n"],
    "version": [
        b"HTTP/1.2",
        b"HTTP/1.9",
        b"HTTP/1.x",
        b"HTTP/2.0",
        b"HTTP/0.9",
        b"HTTP/1",
        b"http/1.1",
        b"HTTP/11.1",
        b"HTTP/1.1 ",
        b"HTTP/1.10",
        b" HTTP/1.1",
    ],
    "status": [b"101", b"199", b"099", b"000", b"20", b"2000", b"2x0", b" 200", b"1000", b"-20"],
    "reason": [b"\tOK", b"  OK", b"OK", b" \x00", b" a\nb", b" \x7f", b" a\rb", b" \x0c", None],
    "content-length": [
        b"0#",
        b"#, 0#",
        b"#1",
        b"#, #1",
        b"0=",
        b"",
        b"-1",
        b"+#",
        b"0x#",
        b"#,",
        b",#",
        b"1" + b"0" * 25,
        b"# #",
        "\u0665".encode(),
    ],
    "te": [
        b"gzip",
        b"gzip, chunked",
        b"chunked, gzip",
        b"chunked,",
        b", chunked",
        b"identity",
        b"",
        b"chunked;q=1",
        b"chunked chunked",
    ],
    "te-count": [2],
    "interim-status": [b"101", b"199"],
    "interim-fields": [
        [(b"Content-Length", b"x")],
        [(b"Transfer-Encoding", b"gzip")],
        [(b"Content-Length", b"1"), (b"Content-Length", b"2")],
    ],
    "chunk-size": [b"0=", b"0000=", b"00000=", b" #", b"+#", b"0x#", b"", b"g", b"-1"],
    "extension": [b";a\nb", b";\n", b" ;x", b"\t;x", b"; x=1 ;y", b"x"],
    "data-end": [b"\n", b"", b"XX", b"\r", b"\r\r\n", b" \r\n"],
    "trailer": [
        [(b"Content-Length", b"5, 6")],
        [(b"Content-Length", b"x")],
        [(b"Transfer-Encoding", b"gzip")],
        [(b"Transfer-Encoding", b"chunked")] * 2,
    ],
}
FIELD_FLAWS = ["name", "spacing", "value", "fold", "junk", "eol"]
HEAD_FLAWS = [*FIELD_FLAWS, "version", "status", "reason", "content-length", "te", "te-count"]
HEAD_FLAWS += ["interim-status", "interim-fields"]
CHUNK_FLAWS = [*FIELD_FLAWS, "chunk-size", "extension", "data-end", "trailer"]


class Gen:
    """Draws the parts of one response, with at most one kind of flaw in it (one kind, so that
    it is not refused for another reason first).

    Unpinned, two responses in three have a flaw kind drawn from `kinds`, and each part of that
    kind is then flawed one time in two, with a shape drawn from FLAWS. Pinned to (kind, shape),
    every part of that kind has that shape. Field flaws go where `fields_at` says: in the head
    or in the trailer section.
    """

    def __init__(
        self,
        draw: st.DrawFn,
        kinds: Sequence[str],
        pinned: tuple[str, Any] | None,
        fields_at: str,
    ) -> None:
        self.draw = draw
        self.pinned = pinned
        if pinned is not None:
            self.flaw: str | None = pinned[0]
        else:
            self.flaw = draw(st.sampled_from(kinds)) if kinds and draw(st.integers(0, 2)) else None
        self.fields_at = fields_at
        self.place = "head"
        self.shapes: set[str] = set()

    def pick(self, kind: str, usual: Sequence[T]) -> T:
        flawed = kind == self.flaw and (kind not in FIELD_FLAWS or self.place == self.fields_at)
        if not flawed:
            return self.draw(st.sampled_from(usual))
        if self.pinned is not None:
            return cast(T, self.pinned[1])
        if self.draw(st.booleans()):
            return self.draw(st.sampled_from(usual))
        return self.draw(st.sampled_from(FLAWS[kind]))

    def nasty(self, max_size: int) -> bytes:
        return bytes(NASTY[c % len(NASTY)] for c in self.draw(st.binary(max_size=max_size)))

    def line(self, line: bytes) -> bytes:
        """A line as sent, ended. A value or reason made of NASTY bytes may break it itself."""
        ended = line + self.pick("eol", [b"\r\n"])
        if re.search(rb"(?<!\r)\n", ended):
            self.shapes.add(BARE_LF)
        if re.search(rb"(^|\n)[ \t]", line):
            self.shapes.add(OBS_FOLD)
        return ended


NAMES = [b"Content-Type", b"x-a", b"Server", b"ETag", b"DATE", b"Set-Cookie", b"X-A", None]
VALUES = [b"text/plain", b"", b"a b", b"\xe9t\xe9", b'"v1"', b"x,y", b"a\t b", b"\x80\xff"]
SPACING = [(b"", b" ", b""), (b"", b"", b""), (b"", b"\t", b" "), (b"", b"  ", b" \t")]
STATUSES = [b"%d" % s for s in (200, 201, 204, 304, 404, 500, 302, 206, 299, 999)]
REASONS = [b" OK", b" Not Found", b"", b" ", b" \xe9t\xe9", b" a\tb"]
CONNECTION = [b"keep-alive", b"close", b"Close", b"Keep-Alive", b"keep-alive, close", b"upgrade"]
CONNECTION += [b"x-a, CLOSE", b"", b"closed", b" , close ,", b"TE"]
INTERIM_FIELDS = [[], [], [(b"Link", b"</style.css>; rel=preload")], [(b"Connection", b"close")]]
TRAILERS = [[], [], [(b"Content-Length", b"5")], [(b"Transfer-Encoding", b"chunked")]]
EXTENSIONS = [b"", b"", b";name=v", b";", b';a="b c"', b";x ", b";\x00", b";\r"]
PIPELINED = [b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"\r\n", b"x"]


def field_line(g: Gen, name: bytes, value: bytes) -> bytes:
    before, after, trailing = g.pick("spacing", SPACING)
    return name + before + b":" + after + value + trailing


def any_field(g: Gen) -> tuple[bytes, bytes]:
    name = g.pick("name", NAMES) or b"x" + bytes(TOKEN[c % len(TOKEN)] for c in g.draw(st.binary()))
    value = g.pick("value", VALUES)
    return name, g.nasty(8) if value is None else value


def field_block(g: Gen, framing: Sequence[tuple[bytes, bytes]]) -> bytes:
    """Header (or trailer) lines, the framing ones among them, each ended, then the blank line."""
    fields = [any_field(g) for _ in range(g.draw(st.integers(0, 3)))] + list(framing)
    lines = [field_line(g, name, value) for name, value in fields]
    if len(lines) > 1:
        lines = g.draw(st.permutations(lines))
    for kind in ("fold", "junk"):
        extra = g.pick(kind, [None])
        if extra is not None:
            lines.insert(g.draw(st.integers(0, len(lines))), extra)
            if kind == "fold":
                g.shapes.add(OBS_FOLD)
    return b"".join(g.line(line) for line in [*lines, b""])


def status_line(g: Gen, codes: Sequence[bytes], kind: str) -> bytes:
    reason = g.pick("reason", REASONS)
    if reason is None:
        reason = b" " + g.nasty(6)
    return g.pick("version", [b"HTTP/1.1", b"HTTP/1.0"]) + b" " + g.pick(kind, codes) + reason


def content_length(g: Gen, n: int) -> bytes:
    d = b"%d" % n
    shape = g.pick("content-length", [b"#", b"#", b"#, #", b"#,# ,\t#", b"="])
    return shape.replace(b"=", b"0" * (20 - len(d)) + d).replace(b"#", d)


def chunk_size_line(g: Gen, n: int) -> bytes:
    h = b"%x" % n
    extension = g.pick("extension", EXTENSIONS)
    usual = [b"#", b"#", b"^", b"="]
    if extension[:1] != b";":  # whitespace before an extension is refused, by h11 too
        usual += [b"# ", b"#\t "]
    shape = g.pick("chunk-size", usual)
    size = shape.replace(b"=", b"0" * (16 - len(h)) + h).replace(b"#", h).replace(b"^", h.upper())
    if len(size) > 16 and size.isalnum():
        g.shapes.add(LONG_CHUNK_SIZE)
    return size + extension + b"\r\n"


def chunked_body(g: Gen, body: bytes) -> bytes:
    out = bytearray()
    pos = 0
    for size in [*g.draw(st.lists(st.integers(1, 40), max_size=4)), len(body)]:
        piece = body[pos : pos + size]
        if not piece:
            break
        pos += len(piece)
        out += chunk_size_line(g, len(piece)) + piece + g.pick("data-end", [b"\r\n"])
    out += chunk_size_line(g, 0)
    g.place = "trailer"
    if g.draw(st.booleans()) or g.fields_at == "trailer":
        out += field_block(g, g.pick("trailer", TRAILERS))
    else:
        out += b"\r\n"
    g.place = "head"
    return bytes(out)


def framed(g: Gen, kinds: Sequence[str]) -> tuple[list[tuple[bytes, bytes]], bytes]:
    """The framing fields of a final response, and the body bytes as sent."""
    body = g.draw(st.binary(max_size=80))
    needs = {"te": "chunked", "te-count": "chunked", "content-length": "length"}.get(g.flaw or "")
    kind = g.draw(st.sampled_from([k for k in kinds if needs is None or needs in k]))
    fields: list[tuple[bytes, bytes]] = []
    if "length" in kind:
        for _ in range(g.draw(st.sampled_from([1, 1, 2, 3]))):
            name = g.draw(
                st.sampled_from([b"Content-Length", b"content-length", b"CONTENT-LENGTH"])
            )
            fields.append((name, content_length(g, len(body))))
    if "chunked" in kind:
        for _ in range(g.pick("te-count", [1])):
            name = g.draw(st.sampled_from([b"Transfer-Encoding", b"transfer-encoding"]))
            fields.append((name, g.pick("te", [b"chunked", b"Chunked", b"CHUNKED"])))
        body = chunked_body(g, body)
    if g.draw(st.booleans()):
        fields.append((b"Connection", g.draw(st.sampled_from(CONNECTION))))
    return fields, body


def interim_heads(g: Gen) -> bytes:
    out = b""
    interim_flaw = g.flaw in ("interim-status", "interim-fields")
    for _ in range(g.draw(st.sampled_from([1, 2] if interim_flaw else [0, 0, 0, 1, 2]))):
        out += g.line(status_line(g, [b"100", b"102", b"103"], "interim-status"))
        out += field_block(g, g.pick("interim-fields", INTERIM_FIELDS))
    return out


@st.composite
def responses(
    draw: st.DrawFn,
    kinds: Sequence[str] = (),
    *,
    pinned: tuple[str, Any] | None = None,
    fields_at: str = "head",
    framings: Sequence[str] = ("length", "chunked", "close", "length+chunked"),
) -> Case:
    """An exchange as an upstream may send it: interim heads, the final response, maybe more."""
    g = Gen(draw, kinds, pinned, fields_at)
    raw = interim_heads(g)
    framing, body = framed(g, framings)
    raw += g.line(status_line(g, STATUSES, "status")) + field_block(g, framing) + body
    raw += draw(st.sampled_from([b"", b"", b"", b"", *PIPELINED]))
    head_only = draw(st.sampled_from([False, False, False, True]))
    cuts = draw(st.lists(st.integers(0, len(raw)), max_size=6))
    return Case(raw, head_only, cuts, g.shapes)


CHUNKED = ["chunked"]


@examples(300)
@given(responses(HEAD_FLAWS))
def test_property_heads_are_read_as_h11_reads_them_or_refused(case: Case) -> None:
    """Status lines, header fields, framing fields and interim heads, plain and flawed."""
    check_against_h11(case)


@examples(300)
@given(responses(CHUNK_FLAWS, fields_at="trailer", framings=CHUNKED))
def test_property_chunked_bodies_are_read_as_h11_reads_them_or_refused(case: Case) -> None:
    """Chunk sizes, extensions, data ends and trailer sections, plain and flawed."""
    check_against_h11(case)


@examples(200)
@given(responses())
def test_property_connections_are_reused_only_when_h11_would_reuse_them(case: Case) -> None:
    """Unflawed responses: versions, Connection, HEAD, 204/304, both framings, pipelining."""
    check_against_h11(case)


# Where each listed flaw shape is run: in a head, or in a chunked body (sizes, extensions, data
# ends, and the fields of its trailer section).
PLACES = {"head": {}, "chunked body": {"fields_at": "trailer", "framings": CHUNKED}}
EVERY_FLAW = [
    pytest.param(place, (kind, shape), id=f"{place}:{kind}:{shape!r}")
    for place, kinds in (("head", HEAD_FLAWS), ("chunked body", CHUNK_FLAWS))
    for kind in kinds
    for shape in FLAWS[kind]
]


@pytest.mark.parametrize(("place", "flaw"), EVERY_FLAW)
@examples(3)
@given(data=st.data())
def test_every_flaw_is_judged_as_h11_judges_it(
    place: str, flaw: tuple[str, Any], data: st.DataObject
) -> None:
    check_against_h11(data.draw(responses(pinned=flaw, **PLACES[place])))
