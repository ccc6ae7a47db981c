"""Unsafe raw paths are BadPath before any lookup: what is matched is exactly what is forwarded."""

from __future__ import annotations

import pytest
from router_samples import router

from mpp_proxy.router import BadPath, Match, NotFound

# Every free and paid shape, so a refused path is refused by the checks and not by a miss.
ROUTER = router("* /*", "* /:a", "* /:a/:b", "GET /")


def reason(path: str) -> str:
    result = ROUTER.match("GET", path)
    assert isinstance(result, BadPath), (path, result)
    return result.reason


@pytest.mark.parametrize(
    "path", ["/s/.", "/s/..", "/s/a/../b", "/s/./a", "/s/a/.", "/s/a/..", "/./s", "/../s/a"]
)
def test_dot_segment_is_bad_path(path: str) -> None:
    assert reason(path) == "dot segment in path"


def test_free_route_cannot_be_walked_into_a_paid_one_with_dot_segments() -> None:
    assert isinstance(ROUTER.match("GET", "/s/v1/models/../chat/completions"), BadPath)


@pytest.mark.parametrize("escape", ["%2F", "%2f"])
def test_encoded_slash_is_bad_path(escape: str) -> None:
    assert reason(f"/s/a{escape}b") == "percent-encoded slash"


@pytest.mark.parametrize("path", ["/s/%2E", "/s/%2e%2e/x", "/s/a%2Eb", "/s/%2e./x"])
def test_encoded_dot_is_bad_path(path: str) -> None:
    assert reason(path) == "percent-encoded dot"


@pytest.mark.parametrize("escape", ["%5C", "%5c"])
def test_encoded_backslash_is_bad_path(escape: str) -> None:
    assert reason(f"/s/a{escape}..") == "percent-encoded backslash"


@pytest.mark.parametrize("path", ["/s/a\\b", "/s\\..\\x", "\\s/a"])
def test_backslash_is_bad_path(path: str) -> None:
    assert isinstance(ROUTER.match("GET", path), BadPath)


def test_raw_nul_is_bad_path() -> None:
    assert reason("/s/a\x00b") == "NUL byte in path"


def test_encoded_nul_is_bad_path() -> None:
    assert reason("/s/a%00b") == "percent-encoded NUL"


@pytest.mark.parametrize("char", ["\t", "\r", "\n", "\x01", "\x1f", "\x7f"])
def test_raw_control_character_is_bad_path(char: str) -> None:
    assert reason(f"/s/a{char}b") == "control character in path"


@pytest.mark.parametrize("escape", ["%0d%0a", "%0A", "%09", "%7F", "%1f"])
def test_encoded_control_character_is_bad_path(escape: str) -> None:
    assert reason(f"/s/a{escape}") == "percent-encoded control character"


@pytest.mark.parametrize("path", ["/s/%c0%ae%c0%ae/x", "/s/%C1%9C"])
def test_encoded_overlong_utf8_is_bad_path(path: str) -> None:
    # A lax UTF-8 decoder upstream reads %C0%AE as "." and %C1%9C as a backslash.
    assert reason(path) == "percent-encoded overlong UTF-8"


def test_raw_overlong_utf8_is_bad_path() -> None:
    assert reason("/s/\xc0\xae\xc0\xae/x") == "overlong UTF-8 byte in path"


@pytest.mark.parametrize("path", ["/s//a", "//s/a", "/s/a//b", "/s/a//", "/s//"])
def test_empty_segment_is_bad_path(path: str) -> None:
    assert reason(path) == "empty path segment"


def test_one_trailing_slash_is_not_an_empty_segment() -> None:
    assert isinstance(ROUTER.match("GET", "/s/a/"), Match)


@pytest.mark.parametrize("path", ["http://evil.example/s/a", "s/a", "*", ""])
def test_absolute_form_or_relative_target_is_bad_path(path: str) -> None:
    assert reason(path) == "the path must start with '/' (origin-form)"


@pytest.mark.parametrize("path", ["/s/%", "/s/a%2", "/s/%zz", "/s/%G0", "/s/%%41", "/s/%-1"])
def test_invalid_percent_escape_is_bad_path(path: str) -> None:
    assert reason(path) == "invalid percent escape"


@pytest.mark.parametrize("path", ["/s/a#frag", "/s/a?q=1"])
def test_raw_fragment_or_query_marker_is_bad_path(path: str) -> None:
    assert reason(path) == "raw '#' or '?' in path"


def test_bad_path_is_reported_before_the_service_lookup() -> None:
    assert isinstance(ROUTER.match("GET", "/unknown/../s"), BadPath)


@pytest.mark.parametrize(
    "path",
    [
        "/s/.well-known",
        "/s/a..b",
        "/s/...",
        "/s/..a",
        "/s/a.",
        "/s/%25",  # an encoded percent is a literal percent
        "/s/%41%7e%C3%A9",
        "/s/a;b=c",
        "/s/é",
        "/s/%3A:",
    ],
)
def test_unusual_but_unambiguous_paths_are_accepted(path: str) -> None:
    result = ROUTER.match("GET", path)
    assert isinstance(result, Match), (path, result)
    assert result.upstream_path == path[2:]


def test_path_of_a_service_that_has_no_matching_route_is_not_found_not_bad() -> None:
    assert isinstance(router("GET /a").match("GET", "/s/b"), NotFound)
