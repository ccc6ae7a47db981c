"""Smallest stand-ins for modules other areas have not landed yet (router, discovery, store)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mpp_proxy.config.model import ANY_METHOD, Config, Route, Service


@dataclass(frozen=True, slots=True)
class Match:
    service: Service
    route: Route
    upstream_path: str
    params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NotFound:
    reason: str


@dataclass(frozen=True, slots=True)
class MethodNotAllowed:
    allowed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BadPath:
    reason: str


_BAD = ("/./", "/../", "%2f", "%2e", "%00", "\\", "\x00")


class Router:
    """Linear matcher with the router contract's results; replaced by mpp_proxy.router."""

    def __init__(self, services: tuple[Service, ...]) -> None:
        self._services = {s.id: s for s in services}

    @classmethod
    def compile(cls, services: tuple[Service, ...]) -> Router:
        return cls(services)

    def match(self, method: str, raw_path: str) -> Match | NotFound | MethodNotAllowed | BadPath:
        if not raw_path.startswith("/"):
            return BadPath("not origin-form")
        low = raw_path.lower() + "/"
        if any(b in low for b in _BAD) or low.endswith(("/./", "/../")):
            return BadPath("unsafe path")
        sid, _, rest = raw_path[1:].partition("/")
        service = self._services.get(sid)
        if service is None:
            return NotFound("unknown service")
        upstream = "/" + rest
        segs = rest.split("/")
        allowed: list[str] = []
        for route in service.routes:
            params = _match_pattern(route.pattern, segs)
            if params is None:
                continue
            if route.method in (method, ANY_METHOD) or (method == "HEAD" and route.method == "GET"):
                return Match(service, route, upstream, params)
            allowed.append(route.method)
        if allowed:
            return MethodNotAllowed(tuple(sorted(set(allowed))))
        return NotFound("no route")


def _match_pattern(pattern: str, segs: list[str]) -> dict[str, str] | None:
    parts = pattern.strip("/").split("/")
    params: dict[str, str] = {}
    for i, part in enumerate(parts):
        if part == "*":
            return params
        if i >= len(segs):
            return None
        if part.startswith(":"):
            if not segs[i]:
                return None
            params[part[1:]] = segs[i]
        elif part != segs[i]:
            return None
    return params if len(parts) == len(segs) else None


def openapi_document(config: Config) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": config.proxy.title, "version": "1"},
        "paths": {},
    }


def llms_txt(config: Config) -> str:
    return f"# {config.proxy.title}\n"


class MemoryStore:
    """Only what the core itself calls (open, close, ping)."""

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> bool:
        return True
