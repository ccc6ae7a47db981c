"""Route patterns ("/v1/files/:id", "/v1/blobs/*") parsed and checked into segment lists."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

from mpp_proxy.config.errors import ConfigError
from mpp_proxy.config.model import ANY_METHOD, Route
from mpp_proxy.router.paths import unsafe_reason

_TOKEN_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~")


@dataclass(frozen=True, slots=True)
class Segment:
    """One pattern segment; static text is percent-decoded, as request segments are compared."""

    kind: Literal["static", "param", "tail"]
    text: str  # decoded static text, the param name, or "*"


def parse_pattern(service_id: str, route: Route) -> tuple[Segment, ...]:
    """The segments of `route.pattern`; ConfigError naming the service and route when unusable."""

    def fail(problem: str) -> ConfigError:
        return ConfigError(problem, service=service_id, route=route.key)

    method = route.method
    if method != ANY_METHOD and not (method and set(method) <= _TOKEN_CHARS):
        raise fail(f"{method!r} is not an upper-case HTTP method or '*'")
    pattern = route.pattern
    reason = unsafe_reason(pattern)
    if reason is not None:
        raise fail(f"the route path {pattern!r} can never match a request: {reason}")
    raw = pattern[1:].split("/")
    out: list[Segment] = []
    names: set[str] = set()
    for i, seg in enumerate(raw):
        if seg == "*":
            if i != len(raw) - 1:
                raise fail("'*' (the rest of the path) must be the last segment")
            out.append(Segment("tail", "*"))
        elif "*" in seg:
            raise fail(f"'*' must be a whole segment, not part of {seg!r}")
        elif seg.startswith(":"):
            name = seg[1:]
            if not (name.isascii() and name.replace("-", "_").isidentifier()):
                raise fail(
                    f"{seg!r}: a parameter name is letters, digits, '_' or '-' "
                    "(use '*' for the rest of the path)"
                )
            if name in names:
                raise fail(f"the parameter {name!r} appears twice")
            names.add(name)
            out.append(Segment("param", name))
        else:
            # Patterns are text (a config file's str), not latin-1 bytes like request paths.
            out.append(Segment("static", unquote(seg, errors="replace")))
    return tuple(out)
