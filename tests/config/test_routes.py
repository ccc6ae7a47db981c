"""Route keys parse to (method, pattern) exactly and keep the order they were written in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mpp_proxy.config import ANY_METHOD, HTTP_METHODS, ConfigError, charge, free
from mpp_proxy.config.checks import parse_route_key
from mpp_proxy.config.presets import service

_methods = st.sampled_from(sorted(HTTP_METHODS))
_segments = st.lists(
    st.one_of(
        st.from_regex(r"[A-Za-z0-9._~-]{1,8}", fullmatch=True),
        st.from_regex(r":[a-z]{1,5}", fullmatch=True),
    ),
    max_size=4,
)
_patterns = st.builds(
    lambda segs, tail: "/" + "/".join(segs) + tail, _segments, st.sampled_from(["", "/", "/*"])
)


@given(_methods, _patterns, st.booleans())
def test_method_and_pattern_round_trip(method: str, pattern: str, lower: bool) -> None:
    written = f"{method.lower() if lower else method} {pattern}"
    assert parse_route_key(written) == (method, pattern)


@given(_patterns)
def test_bare_pattern_and_star_mean_any_method(pattern: str) -> None:
    assert parse_route_key(pattern) == parse_route_key(f"* {pattern}") == (ANY_METHOD, pattern)


@given(st.lists(st.tuples(_methods, _patterns), unique=True, max_size=8))
def test_routes_keep_their_written_order(keys: list[tuple[str, str]]) -> None:
    routes = {f"{m} {p}": (free if i % 2 else charge("1")) for i, (m, p) in enumerate(keys)}
    built = service("api", base_url="http://127.0.0.1:1", routes=routes)
    assert [r.key for r in built.routes] == list(routes)
    assert [r.is_free for r in built.routes] == [i % 2 == 1 for i in range(len(keys))]


@given(st.text(max_size=20))
def test_any_text_is_a_route_key_or_a_config_error(text: str) -> None:
    try:
        method, pattern = parse_route_key(text)
    except ConfigError:
        return
    assert method == ANY_METHOD or method in HTTP_METHODS
    assert pattern.startswith("/") and " " not in pattern


def test_lower_case_method_is_normalised() -> None:
    built = service("api", base_url="http://a", routes={"post /x": free})
    assert built.routes[0].key == "POST /x"


@pytest.mark.parametrize("key", ["", "   ", "GET", "GET  /a  /b"])
def test_malformed_route_key_is_rejected(key: str) -> None:
    with pytest.raises(ConfigError):
        parse_route_key(key)
