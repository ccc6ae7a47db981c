"""Response splitting: whatever a hostile upstream sends, the client gets at most one response.

A header with CR/LF/NUL, two framings, a bad chunk: the answer is a 502 before the head or an
aborted response after it, never a second response on the client's connection, and the bytes
left over never answer the next request.
"""

from __future__ import annotations

import pytest

from tests.security.evil_upstream import EvilUpstream
from tests.security.wire import Exchange, Wire, request
from tests.support.proxy_process import ProxyProcess

CRLF = b"\r\n"
SPLIT = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 7\r\n\r\nspliced"


def head(*lines: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"


def chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)


# Answers the proxy must refuse before sending any head: 502.
BAD_HEADS = {
    "/crlf-in-value": head(b"x-a: a\rSet-Cookie: stolen=1", b"content-length: 2") + b"ok",
    "/lf-in-value": head(b"x-a: a\ncontent-length: 0", b"content-length: 2") + b"ok",
    "/nul-in-value": head(b"x-a: a\x00b", b"content-length: 2") + b"ok",
    "/obs-fold": head(b"x-a: a", b" continued", b"content-length: 2") + b"ok",
    "/space-before-colon": head(b"content-length : 0", b"content-length: 2") + b"ok",
    "/duplicate-content-length": head(b"content-length: 2", b"content-length: 80") + b"ok" + SPLIT,
    "/chunked-identity": head(b"transfer-encoding: chunked, identity") + chunked(SPLIT),
    "/negative-length": head(b"content-length: -1") + SPLIT,
    "/switching-protocols": b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n" + SPLIT,
}

# Answers whose head may be forwarded: the client then gets one response, its body framed
# exactly as the upstream's chosen framing says, or an aborted one.
AMBIGUOUS = {
    "/cl-and-te": head(b"content-length: 0", b"transfer-encoding: chunked") + chunked(SPLIT),
    "/te-and-cl": head(b"transfer-encoding: chunked", b"content-length: 200") + chunked(SPLIT),
    "/extra-after-length": head(b"content-length: 2") + b"ok" + SPLIT,
    "/extra-after-chunked": head(b"transfer-encoding: chunked") + chunked(b"ok") + SPLIT,
    "/bad-chunk-size": head(b"transfer-encoding: chunked") + b"zz\r\n" + SPLIT,
    "/chunk-size-overflow": head(b"transfer-encoding: chunked") + b"1" + b"0" * 20 + CRLF + SPLIT,
    "/chunk-without-crlf": head(b"transfer-encoding: chunked") + b"2\r\nokXX" + SPLIT,
}
# The head and a good chunk reach the client before the upstream breaks the framing.
LATE_BREAKS = {
    "/bad-chunk-later": [head(b"transfer-encoding: chunked") + b"2\r\nok\r\n", b"zz\r\n" + SPLIT],
}


def run(
    gateway: ProxyProcess, evil: EvilUpstream, path: str, answer: bytes | list[bytes]
) -> Exchange:
    """Ask for `path` and then, on the same client connection, for a clean answer."""
    evil.answers[path] = answer
    with Wire(gateway.port) as w:
        w.send(request("GET", "/evil" + path))
        first = w.responses(quiet=0.3)
        if first.closed or not first.responses or not first.responses[-1].complete:
            return first
        w.send(request("GET", "/evil/plain"))
        return w.responses(quiet=0.3)


def assert_never_spliced(result: Exchange) -> None:
    assert b"spliced" not in b"".join(r.body for r in result.responses[1:]), result.raw
    assert not any(r.body == b"spliced" for r in result.responses), result.raw
    assert result.leftover == b"", result.raw
    if len(result.responses) == 2:
        # The follow-up request got its own answer, not bytes the bad response left behind.
        assert result.responses[1].body == b"plain", result.raw


@pytest.mark.parametrize("path", list(BAD_HEADS))
def test_invalid_upstream_heads_are_502_and_nothing_else(
    path: str, gateway: ProxyProcess, evil: EvilUpstream
) -> None:
    result = run(gateway, evil, path, BAD_HEADS[path])
    assert result.responses, result.raw
    first = result.responses[0]
    assert first.status == 502, result.raw
    assert first.header(b"content-type") == b"application/problem+json"
    assert first.header(b"set-cookie") is None
    assert_never_spliced(result)


@pytest.mark.parametrize("path", list(AMBIGUOUS))
def test_ambiguous_or_broken_upstream_bodies_never_make_a_second_response(
    path: str, gateway: ProxyProcess, evil: EvilUpstream
) -> None:
    result = run(gateway, evil, path, AMBIGUOUS[path])
    assert result.responses, result.raw
    first = result.responses[0]
    assert_never_spliced(result)
    if first.status in (500, 502):
        # 502: refused before the head. 500: the proxy aborted before the first body byte went
        # out, and granian answers an application error that comes before the body with 500.
        assert b"spliced" not in first.body, result.raw
        return
    assert first.status == 200, result.raw
    if first.complete:
        # A complete response carries exactly what the upstream's framing delimited.
        length = first.header(b"content-length")
        assert length is None or int(length) == len(first.body), result.raw
        assert first.body in (b"ok", SPLIT), result.raw
    else:
        assert result.closed, "an aborted response must end the connection"


def test_both_framings_forward_the_chunked_body_without_a_stale_content_length(
    gateway: ProxyProcess, evil: EvilUpstream
) -> None:
    """RFC 9112 6.3: a proxy forwarding such a message must drop the Content-Length first."""
    result = run(gateway, evil, "/cl-and-te", AMBIGUOUS["/cl-and-te"])
    first = result.responses[0]
    assert first.status in (200, 502), result.raw
    if first.status == 200:
        assert (first.complete, first.body) == (True, SPLIT), result.raw
        length = first.header(b"content-length")
        assert length is None or int(length) == len(SPLIT), result.raw


@pytest.mark.parametrize("path", list(LATE_BREAKS))
def test_a_body_that_breaks_after_the_head_was_sent_aborts_the_response(
    path: str, gateway: ProxyProcess, evil: EvilUpstream
) -> None:
    result = run(gateway, evil, path, LATE_BREAKS[path])
    assert_never_spliced(result)
    [first] = result.responses
    assert (first.status, first.complete, result.closed) == (200, False, True), result.raw
    assert first.body.startswith(b"ok") and b"spliced" not in first.body, result.raw


def test_a_body_sent_to_a_head_request_never_answers_the_next_request(
    gateway: ProxyProcess, evil: EvilUpstream
) -> None:
    evil.answers["/head-with-body"] = head(b"content-length: 7") + b"spliced"
    with Wire(gateway.port) as w:
        w.send(request("HEAD", "/evil/head-with-body"))
        w.read_until_quiet(quiet=0.3)
        w.send(request("GET", "/evil/plain"))
        result = w.responses(quiet=0.3, head_requests=1)
    assert result.statuses == [200, 200], result.raw
    assert [r.body for r in result.responses] == [b"", b"plain"], result.raw
    assert result.leftover == b"", result.raw
