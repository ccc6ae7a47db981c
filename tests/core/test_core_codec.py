"""The upstream HTTP/1.1 codec: framing exactness under any split, and refusal of bad shapes."""

from __future__ import annotations

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mpp_proxy.core.http11 import (
    ProtocolError,
    RequestError,
    ResponseParser,
    encode_chunk,
    encode_head,
)

Parsed = tuple[int, list[tuple[bytes, bytes]], bytes, bool, bool]


def parse(raw: bytes, splits: list[int], *, head_only: bool = False) -> Parsed:
    """Feed `raw` cut at `splits`; return (status, headers, body, complete, keep_alive)."""
    cuts = sorted({s for s in splits if 0 < s < len(raw)})
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    p = ResponseParser()
    p.start(head_only)
    head = None
    body = bytearray()
    done = False
    for piece in pieces:
        if head is None:
            head = p.head(piece)
            if head is not None:
                chunk, done = p.body(b"")
                body += chunk
            continue
        chunk, done = p.body(piece)
        body += chunk
    assert head is not None
    if not done and p.buffered:
        chunk, done = p.body(b"")
        body += chunk
    return head.status, head.headers, bytes(body), done, p.keep_alive


def chunked(body: bytes, sizes: list[int], ext: bool, trailers: bool) -> bytes:
    out = bytearray()
    pos = 0
    for size in sizes:
        if pos >= len(body):
            break
        piece = body[pos : pos + max(size, 1)]
        pos += len(piece)
        out += b"%x%s\r\n%s\r\n" % (len(piece), b";name=v" if ext else b"", piece)
    if pos < len(body):
        out += encode_chunk(body[pos:])
    out += b"0\r\n"
    if trailers:
        out += b"x-checksum: abc\r\n"
    out += b"\r\n"
    return bytes(out)


header_values = st.binary(min_size=0, max_size=20).map(
    lambda b: bytes(c for c in b if c >= 0x20 and c != 0x7F).strip(b" \t")
)


@settings(max_examples=300)
@given(
    body=st.binary(max_size=3000),
    use_chunked=st.booleans(),
    sizes=st.lists(st.integers(1, 700), max_size=10),
    ext=st.booleans(),
    trailers=st.booleans(),
    extra=st.lists(st.tuples(st.sampled_from([b"X-A", b"x-b", b"Server"]), header_values)),
    splits=st.lists(st.integers(0, 4000), max_size=12),
    status=st.sampled_from([200, 201, 400, 404, 500, 502]),
)
def test_property_body_is_exact_under_any_split(
    body: bytes,
    use_chunked: bool,
    sizes: list[int],
    ext: bool,
    trailers: bool,
    extra: list[tuple[bytes, bytes]],
    splits: list[int],
    status: int,
) -> None:
    head = b"HTTP/1.1 %d Whatever\r\n" % status
    for name, value in extra:
        head += name + b": " + value + b"\r\n"
    if use_chunked:
        raw = head + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(body, sizes, ext, trailers)
    else:
        raw = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    got_status, headers, got_body, done, keep = parse(raw, splits)
    assert got_status == status
    assert got_body == body
    assert done and keep
    assert [(n, v) for n, v in headers if n in (b"x-a", b"x-b", b"server")] == [
        (n.lower(), v) for n, v in extra
    ]


@given(st.lists(st.tuples(st.sampled_from([b"x-a", b"accept"]), st.binary(max_size=12))))
def test_property_request_heads_round_trip_through_h11(headers: list[tuple[bytes, bytes]]) -> None:
    """We refuse exactly the values with control characters; h11 reads back what we wrote."""
    headers = [(n, v.strip(b" \t")) for n, v in headers]
    has_ctl = any((c < 0x20 and c != 0x09) or c == 0x7F for _, v in headers for c in v)
    try:
        raw = encode_head(b"POST", b"/v1/x?a=1", [(b"host", b"up"), *headers])
    except RequestError:
        assert has_ctl
        return
    assert not has_ctl
    server = h11.Connection(h11.SERVER)
    server.receive_data(raw)
    event = server.next_event()
    assert isinstance(event, h11.Request)
    assert event.method == b"POST"
    assert event.target == b"/v1/x?a=1"
    assert list(event.headers)[1:] == headers


@pytest.mark.parametrize("value", [b"a\r\nInjected: 1", b"a\nb", b"a\x00"])
def test_request_header_injection_is_refused(value: bytes) -> None:
    with pytest.raises(RequestError):
        encode_head(b"GET", b"/", [(b"x-a", value)])


def test_request_line_must_be_clean() -> None:
    with pytest.raises(RequestError):
        encode_head(b"GET", b"/a b", [])
    with pytest.raises(RequestError):
        encode_head(b"GE T", b"/", [])
    with pytest.raises(RequestError):
        encode_head(b"GET", b"/", [(b"bad name", b"v")])


def test_interim_responses_are_skipped() -> None:
    raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: x\r\n\r\n"
    raw += b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    assert parse(raw, [5, 30])[0:4] == (200, [(b"content-length", b"2")], b"ok", True)


@pytest.mark.parametrize("status", [204, 304])
def test_no_body_statuses(status: int) -> None:
    raw = b"HTTP/1.1 %d X\r\nContent-Length: 10\r\n\r\n" % status
    _, _, body, done, keep = parse(raw, [])
    assert (body, done, keep) == (b"", True, True)


def test_head_response_has_no_body() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
    _, _, body, done, keep = parse(raw, [], head_only=True)
    assert (body, done, keep) == (b"", True, True)


def test_connection_close_and_http10_are_not_reused() -> None:
    raw = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx"
    assert parse(raw, [])[3:] == (True, False)
    raw = b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx"
    assert parse(raw, [])[3:] == (True, False)
    raw = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\nx"
    assert parse(raw, [])[3:] == (True, False)
    raw = b"HTTP/1.1 200 OK\r\nConnection: x-a, Close\r\nContent-Length: 1\r\n\r\nx"
    assert parse(raw, [])[3:] == (True, False)


def test_a_later_http1_minor_version_is_read_as_http11() -> None:
    raw = b"HTTP/1.2 200 OK\r\nContent-Length: 1\r\n\r\nx"
    assert parse(raw, [])[2:] == (b"x", True, True)


def test_body_until_close_is_complete_only_at_eof() -> None:
    p = ResponseParser()
    p.start(False)
    assert p.head(b"HTTP/1.1 200 OK\r\n\r\nabc") is not None
    assert p.body(b"") == (b"abc", False)
    assert p.body(b"def") == (b"def", False)
    assert p.eof() == (b"", True)
    assert not p.keep_alive


def test_eof_before_the_end_of_a_framed_body_is_an_error() -> None:
    p = ResponseParser()
    p.start(False)
    p.head(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    assert p.body(b"") == (b"abc", False)
    with pytest.raises(ProtocolError):
        p.eof()


def test_content_length_with_transfer_encoding_is_never_reused() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
    raw += b"2\r\nok\r\n0\r\n\r\n"
    _, _, body, done, keep = parse(raw, [])
    assert (body, done, keep) == (b"ok", True, False)


def test_repeated_content_lengths_are_forwarded_as_one_plain_value() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nX-A: 1\r\ncontent-length: 2\r\n\r\nok"
    _, headers, body, done, keep = parse(raw, [])
    assert headers == [(b"content-length", b"2"), (b"x-a", b"1")]
    assert (body, done, keep) == (b"ok", True, True)


def test_transfer_encoding_is_given_in_lower_case() -> None:
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    assert parse(raw, [])[1:3] == ([(b"transfer-encoding", b"chunked")], b"ok")


def test_bytes_after_the_response_forbid_reuse() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"
    _, _, body, done, keep = parse(raw, [])
    assert (body, done, keep) == (b"ok", True, False)


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/2 200 OK\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 099 Low\r\nContent-Length: 0\r\n\r\n",  # below 100: no status class
        b"HTTP/1.x 200 OK\r\n\r\n",
        b"HTTP/1.1 200 O\x00K\r\n\r\n",  # a control character in the reason phrase
        b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",  # a bare LF ending the status line
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 05\r\n\r\n",  # text differs
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 05\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1" + b"0" * 20 + b"\r\n\r\n",  # 21 digits
        b"HTTP/1.1 100 Continue\r\nTransfer-Encoding: gzip\r\n\r\n",  # interim heads too
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 101 Switching\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: 1\nX-B: 2\r\n\r\n",  # bare LF inside a line
        b"HTTP/1.1 200 OK\r\nX-A: 1\rX-B: 2\r\n\r\n",  # bare CR
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\nX-B\r\n\r\n",  # no colon on a later line
        b"HTTP/1.1 200 OK\r\n: 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: \x00\r\n\r\n",
    ],
)
def test_malformed_heads_are_refused(raw: bytes) -> None:
    p = ResponseParser()
    p.start(False)
    with pytest.raises(ProtocolError):
        p.head(raw)


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nok\r\n0\r\n\r\n",
        b"2\r\nokXX0\r\n\r\n",
        b"2\r\nok\r10\r\n\r\n",  # a CR alone after the data: "\r1" is no CRLF
        b"2" * 5000,
        b" 2\r\nok\r\n0\r\n\r\n",  # whitespace before the size
        b"2 ;x\r\nok\r\n0\r\n\r\n",  # or between the size and an extension
        b"2;a\nb\r\nok\r\n0\r\n\r\n",  # a bare LF in an extension
        b"0\r\nBad Trailer: 1\r\n\r\n",
        b"0\r\nno colon\r\n\r\n",
        b"0\r\n folded\r\n\r\n",
        b"0\r\nX-A: \x00\r\n\r\n",
        b"0\r\nContent-Length: x\r\n\r\n",  # trailer fields follow the header-field rules
        b"0\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"0\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
    ],
)
def test_malformed_chunks_are_refused(body: bytes) -> None:
    p = ResponseParser()
    p.start(False)
    p.head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    with pytest.raises(ProtocolError):
        p.body(body)


def test_chunk_sizes_may_carry_trailing_whitespace_and_extensions() -> None:
    body = b'2 \t\r\nok\r\n1;name="v w" \r\n!\r\n0\r\nX-A: 1\r\nX-B:\r\n\r\n'
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    for cut in range(len(raw)):
        assert parse(raw, [cut])[2:] == (b"ok!", True, True)


def test_oversized_head_is_refused() -> None:
    p = ResponseParser()
    p.start(False)
    with pytest.raises(ProtocolError):
        p.head(b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000)


def test_header_values_lose_surrounding_whitespace_and_names_are_lower_cased() -> None:
    p = ResponseParser()
    p.start(False)
    head = p.head(b'HTTP/1.1 200 OK\r\nX-A: \t a b \t\r\nX-Empty:\r\nETag: "Ab"\r\n\r\n')
    assert head is not None
    assert head.headers == [(b"x-a", b"a b"), (b"x-empty", b""), (b"etag", b'"Ab"')]
