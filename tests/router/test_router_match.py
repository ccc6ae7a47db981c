"""Router.match: which route a (method, raw path) reaches, and the 404/405 answers."""

from __future__ import annotations

from router_samples import key_of, route, router, service

from mpp_proxy.router import Match, MethodNotAllowed, NotFound, Router

# ------------------------------------------------------------------ service and upstream path


def test_first_segment_picks_the_service_and_the_rest_is_forwarded() -> None:
    r = Router.compile(
        [service("GET /v1/models", sid="openai"), service("GET /v1/models", sid="other")]
    )
    result = r.match("GET", "/openai/v1/models")
    assert isinstance(result, Match)
    assert result.service.id == "openai"
    assert result.upstream_path == "/v1/models"
    assert result.params == {}


def test_service_alone_forwards_root() -> None:
    r = router("GET /")
    for path in ("/s", "/s/"):
        result = r.match("GET", path)
        assert isinstance(result, Match), path
        assert result.upstream_path == "/"


def test_unknown_service_is_not_found() -> None:
    assert isinstance(router("GET /a").match("GET", "/nope/a"), NotFound)


def test_bare_slash_names_no_service() -> None:
    assert router("GET /a").match("GET", "/") == NotFound("no service in path")


def test_upstream_path_is_byte_for_byte_what_the_client_sent() -> None:
    r = router("GET /v1/files/:name", "GET /v1/blobs/*")
    sent = "/v1/files/a%20B%c3%a9%3A"
    result = r.match("GET", "/s" + sent)
    assert isinstance(result, Match)
    assert result.upstream_path == sent  # escapes and their case untouched
    result = r.match("GET", "/s/v1/blobs/x/%7Ey/z/")
    assert isinstance(result, Match)
    assert result.upstream_path == "/v1/blobs/x/%7Ey/z/"


def test_param_value_is_percent_decoded_utf8() -> None:
    result = router("GET /v1/forecast/:city").match("GET", "/s/v1/forecast/S%C3%A3o%20Paulo")
    assert isinstance(result, Match)
    assert result.params == {"city": "São Paulo"}
    assert result.upstream_path == "/v1/forecast/S%C3%A3o%20Paulo"


def test_raw_utf8_bytes_decode_like_their_escapes() -> None:
    r = router("GET /café")
    raw = "/s/café".encode().decode("latin-1")  # what the core hands over
    assert key_of(r.match("GET", raw)) == "GET /café"
    assert key_of(r.match("GET", "/s/caf%C3%A9")) == "GET /café"


def test_percent_encoded_letters_reach_the_static_route_an_upstream_would_decode_them_to() -> None:
    # Otherwise `/v1/chat/%63ompletions` would slip past the paid route into the free tail,
    # and an upstream that decodes it would serve chat/completions for free.
    r = Router.compile(
        [service(route("POST /v1/chat/completions", paid=True), route("POST /v1/*"))]
    )
    result = r.match("POST", "/s/v1/chat/%63ompletions")
    assert isinstance(result, Match)
    assert result.route.price is not None
    assert result.upstream_path == "/v1/chat/%63ompletions"


def test_params_keep_their_names_per_route() -> None:
    r = router("GET /a/:x", "POST /a/:y")
    get, post = r.match("GET", "/s/a/1"), r.match("POST", "/s/a/2")
    assert isinstance(get, Match) and isinstance(post, Match)
    assert get.params == {"x": "1"}
    assert post.params == {"y": "2"}


# ------------------------------------------------------------------ precedence and backtracking


def test_static_beats_param() -> None:
    r = router("GET /v1/:name", "GET /v1/models")
    assert key_of(r.match("GET", "/s/v1/models")) == "GET /v1/models"
    assert key_of(r.match("GET", "/s/v1/other")) == "GET /v1/:name"


def test_param_beats_tail() -> None:
    r = router("GET /v1/*", "GET /v1/:name")
    assert key_of(r.match("GET", "/s/v1/x")) == "GET /v1/:name"
    assert key_of(r.match("GET", "/s/v1/x/y")) == "GET /v1/*"


def test_earlier_segment_decides_before_later_ones() -> None:
    r = router("GET /a/:x/c", "GET /:y/b/c")
    assert key_of(r.match("GET", "/s/a/b/c")) == "GET /a/:x/c"


def test_dead_end_static_branch_backtracks_to_param() -> None:
    r = router("GET /a/b/c", "GET /a/:x/d")
    result = r.match("GET", "/s/a/b/d")
    assert key_of(result) == "GET /a/:x/d"
    assert isinstance(result, Match) and result.params == {"x": "b"}


def test_dead_end_param_branch_backtracks_to_tail_and_drops_its_params() -> None:
    r = router("GET /a/:x/:y/z", "GET /a/:p/*")
    result = r.match("GET", "/s/a/1/2/w")
    assert key_of(result) == "GET /a/:p/*"
    assert isinstance(result, Match) and result.params == {"p": "1"}


def test_dead_end_static_branch_backtracks_to_tail() -> None:
    r = router("GET /files/special/meta", "GET /files/*")
    assert key_of(r.match("GET", "/s/files/special/other")) == "GET /files/*"
    assert key_of(r.match("GET", "/s/files/special")) == "GET /files/*"


def test_tail_takes_one_or_more_segments() -> None:
    r = router("GET /files/*")
    assert key_of(r.match("GET", "/s/files/a")) == "GET /files/*"
    assert key_of(r.match("GET", "/s/files/a/b/c/")) == "GET /files/*"
    assert isinstance(r.match("GET", "/s/files/"), NotFound)
    assert isinstance(r.match("GET", "/s/files"), NotFound)


def test_param_never_matches_an_empty_segment() -> None:
    assert isinstance(router("GET /a/:x").match("GET", "/s/a/"), NotFound)


def test_route_order_in_config_never_changes_the_result() -> None:
    keys = ["GET /a/*", "GET /a/:x", "GET /a/b", "* /a/b", "POST /:y/b"]
    forward, backward = router(*keys), router(*reversed(keys))
    for method in ("GET", "POST", "PUT", "HEAD"):
        for path in ("/s/a/b", "/s/a/c", "/s/a/b/c", "/s/q/b"):
            one, other = forward.match(method, path), backward.match(method, path)
            if isinstance(one, Match):
                assert isinstance(other, Match)
                assert (one.route, one.params) == (other.route, other.params)
            else:
                assert one == other


# ------------------------------------------------------------------ methods


def test_post_never_falls_through_to_free_get() -> None:
    r = router("GET /v1/models")
    assert r.match("POST", "/s/v1/models") == MethodNotAllowed(("GET", "HEAD"))


def test_method_not_allowed_lists_sorted_methods() -> None:
    r = router("PUT /x", "DELETE /x", "POST /x")
    assert r.match("GET", "/s/x") == MethodNotAllowed(("DELETE", "POST", "PUT"))


def test_method_not_allowed_unites_every_shape_that_matches() -> None:
    r = router("POST /a/b", "PUT /a/:x", "DELETE /a/*")
    assert r.match("GET", "/s/a/b") == MethodNotAllowed(("DELETE", "POST", "PUT"))


def test_method_decides_between_shapes_before_falling_back() -> None:
    # A static shape without the method does not hide a param shape that has it.
    r = router("POST /a/b", "GET /a/:x")
    assert key_of(r.match("GET", "/s/a/b")) == "GET /a/:x"
    assert key_of(r.match("POST", "/s/a/b")) == "POST /a/b"


def test_param_shape_without_the_method_falls_back_to_a_tail_that_has_it() -> None:
    r = router("GET /a/:x", "POST /a/*")
    assert key_of(r.match("POST", "/s/a/b")) == "POST /a/*"
    assert key_of(r.match("GET", "/s/a/b")) == "GET /a/:x"
    assert r.match("PUT", "/s/a/b") == MethodNotAllowed(("GET", "HEAD", "POST"))


def test_paid_static_post_is_not_bypassed_by_a_free_any_method_param() -> None:
    r = Router.compile([service(route("POST /a/b", paid=True), route("* /a/:x"))])
    result = r.match("POST", "/s/a/b")
    assert isinstance(result, Match) and result.route.price is not None


def test_method_specific_route_beats_any_method_route_on_the_same_shape() -> None:
    r = router("* /v1/things", "POST /v1/things")
    assert key_of(r.match("POST", "/s/v1/things")) == "POST /v1/things"
    assert key_of(r.match("GET", "/s/v1/things")) == "* /v1/things"


def test_any_method_route_takes_unlisted_methods() -> None:
    assert key_of(router("* /dav").match("PROPFIND", "/s/dav")) == "* /dav"


def test_head_uses_the_get_route() -> None:
    assert key_of(router("GET /a").match("HEAD", "/s/a")) == "GET /a"


def test_explicit_head_route_beats_get() -> None:
    assert key_of(router("GET /a", "HEAD /a").match("HEAD", "/s/a")) == "HEAD /a"


def test_head_prefers_the_get_route_over_an_any_method_route() -> None:
    # HEAD must answer as GET would (same price, same terms).
    assert key_of(router("* /a", "GET /a").match("HEAD", "/s/a")) == "GET /a"


def test_get_does_not_use_a_head_route() -> None:
    assert router("HEAD /a").match("GET", "/s/a") == MethodNotAllowed(("HEAD",))


# ------------------------------------------------------------------ trailing slash


def test_trailing_slash_is_significant() -> None:
    r = router("GET /v1/models")
    assert key_of(r.match("GET", "/s/v1/models")) == "GET /v1/models"
    assert isinstance(r.match("GET", "/s/v1/models/"), NotFound)


def test_pattern_with_trailing_slash_matches_only_with_it() -> None:
    r = router("GET /v1/models/")
    result = r.match("GET", "/s/v1/models/")
    assert isinstance(result, Match) and result.upstream_path == "/v1/models/"
    assert isinstance(r.match("GET", "/s/v1/models"), NotFound)


def test_both_spellings_can_be_different_routes() -> None:
    r = router("GET /a", "GET /a/")
    assert key_of(r.match("GET", "/s/a")) == "GET /a"
    assert key_of(r.match("GET", "/s/a/")) == "GET /a/"


def test_not_found_says_when_the_other_trailing_slash_spelling_has_a_route() -> None:
    r = router("GET /v1/models", "GET /v1/files/")
    assert r.match("GET", "/s/v1/models/") == NotFound(
        "no route for this path; one matches it without the trailing slash"
    )
    assert r.match("GET", "/s/v1/files") == NotFound(
        "no route for this path; one matches it with the trailing slash"
    )
    assert r.match("GET", "/s/v1/zzz") == NotFound("no route for this path")
