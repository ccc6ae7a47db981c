"""Router.compile: ambiguous routes and unusable patterns are config errors naming what is wrong."""

from __future__ import annotations

import pytest
from router_samples import BASE, key_of, router, service

from mpp_proxy.config.errors import ConfigError
from mpp_proxy.config.model import Route, Service
from mpp_proxy.router import Router


def compile_error(*keys: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        router(*keys, sid="weather")
    return info.value


def test_routes_differing_only_in_param_names_are_a_config_error() -> None:
    err = compile_error("GET /a/:x", "GET /a/:y")
    assert err.service == "weather"
    assert err.route == "GET /a/:y"
    assert "'GET /a/:x'" in str(err)
    assert "can never be told apart" in str(err)


def test_two_any_method_routes_on_one_shape_are_a_config_error() -> None:
    err = compile_error("* /files/:id/*", "* /files/:name/*")
    assert "'* /files/:id/*'" in str(err) and err.route == "* /files/:name/*"


def test_same_route_twice_is_a_config_error() -> None:
    assert compile_error("POST /v1/x", "POST /v1/x").route == "POST /v1/x"


def test_conflict_is_reported_the_same_whatever_the_order() -> None:
    one = compile_error("GET /a/:x", "GET /a/:y", "GET /b/:p", "GET /b/:q")
    other = compile_error("GET /b/:q", "GET /a/:y", "GET /b/:p", "GET /a/:x")
    assert str(one) == str(other)


def test_routes_told_apart_by_method_or_shape_compile() -> None:
    router(
        "GET /a/:x",
        "POST /a/:y",  # other method
        "* /a/:z",  # any method: a method-specific route beats it on this shape
        "GET /a/:x/",  # trailing slash is another shape
        "GET /a/*",  # tail
        "GET /a/b",  # static
        "HEAD /a/:x",
    )


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        ("/a/*/b", "must be the last segment"),
        ("/a/b*", "must be a whole segment"),
        ("/a/:", "parameter name"),
        ("/a/:x.json", "parameter name"),
        ("/a/:x/:x", "appears twice"),
        ("/a/../b", "dot segment"),
        ("/a//b", "empty path segment"),
        ("/a/%2F", "percent-encoded slash"),
        ("a/b", "origin-form"),
    ],
)
def test_unusable_pattern_is_a_config_error(pattern: str, words: str) -> None:
    err = compile_error(f"GET {pattern}")
    assert words in err.problem
    assert err.service == "weather" and err.route == f"GET {pattern}"


@pytest.mark.parametrize("method", ["get", "", "GET POST"])
def test_method_must_be_upper_case_token_or_star(method: str) -> None:
    with pytest.raises(ConfigError, match="HTTP method"):
        Router.compile([Service(id="s", base_url=BASE, routes=(Route(method, "/a"),))])


def test_duplicate_service_id_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="two services"):
        Router.compile([service("GET /a"), service("GET /b")])


@pytest.mark.parametrize("sid", ["", "a/b", "..", "a%2fb", "a\\b"])
def test_service_id_must_be_one_safe_segment(sid: str) -> None:
    with pytest.raises(ConfigError, match="one safe path segment"):
        Router.compile([service("GET /a", sid=sid)])


def test_percent_encoded_pattern_matches_its_decoded_request() -> None:
    r = router("GET /caf%C3%A9/:x")
    assert key_of(r.match("GET", "/s/caf%c3%a9/1")) == "GET /caf%C3%A9/:x"
    assert key_of(r.match("GET", "/s/%63af%C3%A9/1")) == "GET /caf%C3%A9/:x"
