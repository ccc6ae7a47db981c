"""Route patterns as OpenAPI path templates: `:param` and `*` become declared `{name}` parameters.

OpenAPI allows one operation per (path template, method) and forbids two templates that differ
only in parameter names. Our router is richer (a `*` tail and a `:param` may sit at the same
place; a `*` route method fills in around explicit ones), so routes are placed in the router's
order of precedence and a later route that would land on a taken (template, method) either moves
(a tail gains one more leading segment, which is exactly the set of paths it still answers) or,
when it can no longer be reached for that method, is left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from mpp_proxy.config.model import ANY_METHOD, HTTP_METHODS, Route, Service

# What `"* /path"` documents: every method the router accepts, in OpenAPI's field order.
_OPENAPI_ORDER = ("get", "put", "post", "delete", "options", "head", "patch")
ANY_METHOD_OPERATIONS = tuple(m for m in _OPENAPI_ORDER if m.upper() in HTTP_METHODS)
TAIL_NAME = "path"
_SHIFT_NAME = "segment"
# A tail moves at most this many segments to get out of the way of other routes.
_MAX_SHIFT = 8
# Parameter names end up inside `{...}` and are parsed by tools as format fields: keep them plain.
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_-]")

Kind = Literal["static", "param", "tail"]


@dataclass(frozen=True, slots=True)
class Segment:
    """One path segment: static text, or a parameter (`param` = one segment, `tail` = the rest)."""

    kind: Kind
    text: str  # the static text, or the parameter's name

    @property
    def rendered(self) -> str:
        if self.kind == "static":
            # Braces would read as a template expression; no router pattern needs them literally.
            return self.text.replace("{", "%7B").replace("}", "%7D")
        return "{" + self.text + "}"


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one (route, method) appears in the document."""

    route: Route
    method: str  # lower-case OpenAPI operation field: "get", "post", ...
    template: str  # the path key: "/weather/v1/forecast/{city}"
    parameters: tuple[Segment, ...]  # the non-static segments, in path order, as documented


@dataclass(slots=True)
class _PathItem:
    segments: tuple[Segment, ...]
    # Method -> (segment kinds, explicit method?) of the route holding it. The same kinds mean
    # the same router leaf.
    methods: dict[str, tuple[tuple[Kind, ...], bool]] = field(default_factory=dict)

    @property
    def template(self) -> str:
        return "/" + "/".join(s.rendered for s in self.segments)


def parse_pattern(pattern: str) -> tuple[Segment, ...]:
    """`"/v1/files/:id/*"` -> static v1, static files, param id, tail path (names made unique)."""
    raw = pattern.split("/")[1:] if pattern.startswith("/") else pattern.split("/")
    segments: list[Segment] = []
    used: set[str] = set()
    for index, text in enumerate(raw):
        last = index == len(raw) - 1
        if text.startswith(":") or (text.startswith("*") and not last):
            segments.append(Segment("param", _unique(_safe_name(text[1:], "param"), used)))
        elif text.startswith("*"):
            segments.append(Segment("tail", _unique(_safe_name(text[1:], TAIL_NAME), used)))
        else:
            segments.append(Segment("static", text))
    return tuple(segments)


def _safe_name(name: str, default: str) -> str:
    return _UNSAFE_NAME.sub("_", name) or default


def _unique(name: str, used: set[str]) -> str:
    candidate, n = name, 1
    while candidate in used:
        n += 1
        candidate = f"{name}_{n}"
    used.add(candidate)
    return candidate


def _shape(segments: tuple[Segment, ...]) -> tuple[str | None, ...]:
    """Segments with parameter names erased: two templates with one shape are one path."""
    return tuple(s.text if s.kind == "static" else None for s in segments)


_RANK = {"static": 0, "param": 1, "tail": 2}


def _precedence(route: Route) -> tuple[bool, tuple[int, ...]]:
    # Explicit methods before "*"; then as the router tries them, segment by segment: a static
    # segment before a `:param` before a `*` tail (so "/:id/*" is placed before "/*", which
    # only gets the paths the deeper route leaves).
    segments = parse_pattern(route.pattern)
    return (route.method == ANY_METHOD, tuple(_RANK[s.kind] for s in segments))


def place_routes(service: Service) -> list[Placement]:
    """Every documented (route, method) of a service, in config order within each precedence."""
    items: dict[tuple[str | None, ...], _PathItem] = {}
    placements: list[Placement] = []
    prefix = (Segment("static", service.id),)
    for route in sorted(service.routes, key=_precedence):
        segments = prefix + parse_pattern(route.pattern)
        methods = ANY_METHOD_OPERATIONS if route.method == ANY_METHOD else (route.method.lower(),)
        for method in methods:
            placed = _place(items, segments, method, explicit=route.method != ANY_METHOD)
            if placed is not None:
                template, parameters = placed
                placements.append(Placement(route, method, template, parameters))
    return placements


def _place(
    items: dict[tuple[str | None, ...], _PathItem],
    segments: tuple[Segment, ...],
    method: str,
    *,
    explicit: bool,
) -> tuple[str, tuple[Segment, ...]] | None:
    """Claim (template, method) for a route, or None when the router never sends it there."""
    candidate = segments
    for _ in range(_MAX_SHIFT + 1):
        kinds = tuple(s.kind for s in candidate)
        item = items.setdefault(_shape(candidate), _PathItem(candidate))
        holder = item.methods.get(method)
        # The router gives HEAD to an explicit GET route before a "*" route.
        if holder is None and method == "head" and not explicit:
            get = item.methods.get("get")
            holder = get if get is not None and get[1] else None
        if holder is None:
            item.methods[method] = (kinds, explicit)
            # Names come from whichever route created the path item; kinds from this route.
            parameters = tuple(
                Segment(own.kind, named.text)
                for own, named in zip(candidate, item.segments, strict=True)
                if own.kind != "static"
            )
            return item.template, parameters
        if holder[0] == kinds or candidate[-1].kind != "tail":
            return None  # the same router leaf answers this method with another route
        used = {s.text for s in candidate if s.kind != "static"}
        candidate = (*candidate[:-1], Segment("param", _unique(_SHIFT_NAME, used)), candidate[-1])
    return None
