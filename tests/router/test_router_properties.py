"""Properties: the trie agrees with a brute-force scorer, forwards nothing unsafe, ignores order."""

from __future__ import annotations

import string
from urllib.parse import unquote, unquote_to_bytes

from hypothesis import given, settings
from hypothesis import strategies as st
from router_samples import BASE

from mpp_proxy.config.errors import ConfigError
from mpp_proxy.config.model import Route, Service
from mpp_proxy.router import BadPath, Match, MatchResult, MethodNotAllowed, NotFound, Router

# An outcome both matchers can be compared on (the Route objects are the config's own).
Outcome = tuple[object, ...]

# ------------------------------------------------------------------ the reference matcher


def ref_is_bad(path: str) -> bool:
    """Path safety written the slow, obvious way: character by character, segment by segment."""
    if not path.startswith("/"):
        return True
    for ch in path:
        if ch in "\\#?\xc0\xc1" or ord(ch) < 0x20 or ord(ch) == 0x7F:
            return True
    segments = path[1:].split("/")
    if "" in segments[:-1] or "." in segments or ".." in segments:
        return True
    i = path.find("%")
    while i >= 0:
        pair = path[i + 1 : i + 3]
        if len(pair) < 2 or not all(c in string.hexdigits for c in pair):
            return True
        byte = int(pair, 16)
        if byte in (0x2F, 0x2E, 0x5C, 0xC0, 0xC1) or byte < 0x20 or byte == 0x7F:
            return True
        i = path.find("%", i + 3)
    return False


def ref_decode(segment: str) -> str:
    return unquote_to_bytes(segment.encode("latin-1")).decode("utf-8", "replace")


def ref_shape_score(pattern: str, segs: list[str]) -> tuple[list[int], dict[str, str]] | None:
    """Per segment 0 static, 1 param, 2 tail: lower is more specific, compared left to right."""
    parts = pattern[1:].split("/")
    score: list[int] = []
    params: dict[str, str] = {}
    for i, part in enumerate(parts):
        if part == "*":
            rest = segs[i:]
            if not rest or rest == [""]:
                return None
            return [*score, 2], params
        if i >= len(segs):
            return None
        if part.startswith(":"):
            if segs[i] == "":
                return None
            params[part[1:]] = segs[i]
            score.append(1)
        elif unquote(part) == segs[i]:
            score.append(0)
        else:
            return None
    return (score, params) if len(parts) == len(segs) else None


def ref_method_rank(route_method: str, method: str) -> int | None:
    if route_method == method:
        return 0
    if method == "HEAD" and route_method == "GET":
        return 1
    if route_method == "*":
        return 2
    return None


def ref_shape(pattern: str) -> str:
    return "/".join(":" if p.startswith(":") else p for p in pattern.split("/"))


def ref_ambiguous(routes: tuple[Route, ...]) -> bool:
    keys = [(ref_shape(r.pattern), r.method) for r in routes]
    return len(set(keys)) != len(keys)


def ref_match(services: dict[str, Service], method: str, path: str) -> Outcome:
    if ref_is_bad(path):
        return ("bad",)
    sid, _, rest = path[1:].partition("/")
    service = services.get(sid)
    if service is None:
        return ("not found",)
    upstream = "/" + rest
    segs = [ref_decode(s) for s in rest.split("/")]
    candidates: list[tuple[tuple[list[int], int], Route, dict[str, str]]] = []
    allowed: set[str] = set()
    for route in service.routes:
        scored = ref_shape_score(route.pattern, segs)
        if scored is None:
            continue
        allowed.add(route.method)
        if route.method == "GET":
            allowed.add("HEAD")
        rank = ref_method_rank(route.method, method)
        if rank is not None:
            candidates.append(((scored[0], rank), route, scored[1]))
    if candidates:
        candidates.sort(key=lambda c: c[0])
        if len(candidates) > 1:
            assert candidates[0][0] != candidates[1][0], "ties only come from ambiguous configs"
        _, route, params = candidates[0]
        return ("match", route, upstream, params)
    if allowed:
        return ("405", tuple(sorted(allowed)))
    return ("not found",)


def outcome(result: MatchResult) -> Outcome:
    if isinstance(result, Match):
        return ("match", result.route, result.upstream_path, result.params)
    if isinstance(result, MethodNotAllowed):
        return ("405", result.allowed)
    if isinstance(result, BadPath):
        return ("bad",)
    assert isinstance(result, NotFound)
    return ("not found",)


# ------------------------------------------------------------------ strategies

METHODS = ("GET", "POST", "HEAD", "*")
REQUEST_METHODS = ("GET", "POST", "HEAD", "PUT")
STATIC = ("a", "b", "cA", "%C3%A9")


@st.composite
def patterns(draw: st.DrawFn) -> str:
    parts: list[str] = []
    for i in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            parts.append(draw(st.sampled_from(STATIC)))
        else:
            parts.append(":" + draw(st.sampled_from("xy")) + str(i))
    end = draw(st.sampled_from(["", "", "/", "/*"]))
    pattern = "/" + "/".join(parts)
    if end == "/*":
        return pattern.rstrip("/") + "/*"
    if end == "/" and parts:
        return pattern + "/"
    return pattern


routes_st = st.lists(
    st.builds(Route, method=st.sampled_from(METHODS), pattern=patterns()),
    min_size=1,
    max_size=10,
)

# Request segments: pattern text in several spellings, strangers, and an occasional unsafe one.
REQUEST_SEGMENTS = ("a", "%61", "b", "cA", "c%41", "%63%41", "é".encode().decode("latin-1"))
REQUEST_SEGMENTS += ("%c3%a9", "x", "yy", "%20", ".", "%2e", "")


@st.composite
def paths(draw: st.DrawFn) -> str:
    sid = draw(st.sampled_from(["s", "s", "s", "t", "", "u"]))
    segs = draw(st.lists(st.sampled_from(REQUEST_SEGMENTS), max_size=5))
    path = "/" + sid + "".join("/" + s for s in segs)
    if draw(st.integers(0, 4)) == 0:
        path += "/"
    return path


def unambiguous(routes: list[Route]) -> tuple[Route, ...]:
    seen: set[tuple[str, str]] = set()
    kept: list[Route] = []
    for r in routes:
        key = (ref_shape(r.pattern), r.method)
        if key not in seen:
            seen.add(key)
            kept.append(r)
    return tuple(kept)


def services_for(routes: tuple[Route, ...]) -> list[Service]:
    other = Service(id="t", base_url=BASE, routes=(Route("GET", "/a"),))
    return [Service(id="s", base_url=BASE, routes=routes), other]


requests_st = st.lists(st.tuples(st.sampled_from(REQUEST_METHODS), paths()), max_size=25)

# ------------------------------------------------------------------ (a) agrees with the reference


@settings(max_examples=400, deadline=None)
@given(routes=routes_st, requests=requests_st)
def test_trie_agrees_with_brute_force_reference(
    routes: list[Route], requests: list[tuple[str, str]]
) -> None:
    services = services_for(unambiguous(routes))
    router = Router.compile(services)
    by_id = {s.id: s for s in services}
    for method, path in requests:
        assert outcome(router.match(method, path)) == ref_match(by_id, method, path), (
            method,
            path,
        )


@settings(max_examples=200, deadline=None)
@given(routes=routes_st, requests=requests_st)
def test_every_method_a_405_allows_does_match(
    routes: list[Route], requests: list[tuple[str, str]]
) -> None:
    router = Router.compile(services_for(unambiguous(routes)))
    for method, path in requests:
        result = router.match(method, path)
        if isinstance(result, MethodNotAllowed):
            assert method not in result.allowed
            for allowed in result.allowed:
                assert isinstance(router.match(allowed, path), Match), (allowed, path)


@settings(max_examples=300, deadline=None)
@given(routes=routes_st)
def test_compile_refuses_exactly_the_routes_that_cannot_be_told_apart(routes: list[Route]) -> None:
    services = services_for(tuple(routes))
    if ref_ambiguous(tuple(routes)):
        try:
            Router.compile(services)
        except ConfigError as err:
            assert err.service == "s"
        else:
            raise AssertionError("ambiguous routes compiled")
    else:
        Router.compile(services)


# ------------------------------------------------------------------ (b) nothing unsafe forwarded

HOSTILE = (
    "/",
    "a",
    "b",
    ".",
    "..",
    "%2e",
    "%2E",
    "%2f",
    "%2F",
    "%5c",
    "%5C",
    "\\",
    "%00",
    "\x00",
    "%",
    "%2",
    "%zz",
    "%25",
    "%252e",
    "%c0%ae",
    "\xc0\xae",
    "%e0%80%ae",
    "\t",
    "\r\n",
    "%0d%0a",
    ";",
    "?",
    "#",
    "é",
    "http:",
    "//",
    "*",
    "s",
)


@settings(max_examples=600, deadline=None)
@given(
    start=st.sampled_from(["/s/", "/s", "", "/", "//s/"]),
    pieces=st.lists(st.sampled_from(HOSTILE), max_size=12),
    method=st.sampled_from(REQUEST_METHODS),
)
def test_no_forwarded_upstream_path_has_a_dot_segment_or_encoded_slash_or_dot(
    start: str, pieces: list[str], method: str
) -> None:
    router = Router.compile(
        [Service(id="s", base_url=BASE, routes=tuple(Route("*", p) for p in FREE_FOR_ALL))]
    )
    raw = start + "".join(pieces)
    result = router.match(method, raw)
    if not isinstance(result, Match):
        return
    up = result.upstream_path
    assert up == (raw[2:] or "/"), "forwarded byte for byte"
    lowered = up.lower()
    for banned in ("%2f", "%2e", "%5c", "%00", "\\", "\x00", "//"):
        assert banned not in lowered, (raw, banned)
    assert not {".", ".."} & set(up.split("/"))
    # Decoded once, as an upstream would, the path still has the same segments and no dots.
    decoded = unquote(up).split("/")
    assert len(decoded) == len(up.split("/"))
    assert not {".", ".."} & set(decoded)


FREE_FOR_ALL = ("/*", "/:a", "/:a/:b", "/", "/a/*", "/a/:b/")

# ------------------------------------------------------------------ (c) order never matters


@settings(max_examples=200, deadline=None)
@given(data=st.data(), routes=routes_st, requests=requests_st)
def test_shuffling_route_order_never_changes_the_result(
    data: st.DataObject, routes: list[Route], requests: list[tuple[str, str]]
) -> None:
    kept = unambiguous(routes)
    shuffled = tuple(data.draw(st.permutations(kept)))
    one = Router.compile(services_for(kept))
    other = Router.compile(services_for(shuffled))
    for method, path in requests:
        assert outcome(one.match(method, path)) == outcome(other.match(method, path))


@settings(max_examples=100, deadline=None)
@given(data=st.data(), routes=routes_st)
def test_shuffling_an_ambiguous_config_reports_the_same_conflict(
    data: st.DataObject, routes: list[Route]
) -> None:
    def error(rs: tuple[Route, ...]) -> str | None:
        try:
            Router.compile(services_for(rs))
        except ConfigError as err:
            return str(err)
        return None

    shuffled = tuple(data.draw(st.permutations(routes)))
    assert error(tuple(routes)) == error(shuffled)
