"""What `Router.match` answers: a match, or why there is none (404, 405, 400)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from mpp_proxy.config.model import Route, Service


class Match(NamedTuple):
    """The route a request reached; `upstream_path` is the raw path after `/{service.id}`.

    A NamedTuple rather than a frozen dataclass: it is built on every request, and a frozen
    dataclass's __init__ costs about three times as much.
    """

    service: Service
    route: Route
    upstream_path: str
    params: dict[str, str]


@dataclass(frozen=True, slots=True)
class NotFound:
    """No service, or no route of the service has this path's shape (404)."""

    reason: str


@dataclass(frozen=True, slots=True)
class MethodNotAllowed:
    """Routes have this path's shape but none takes the method (405 with `Allow`)."""

    allowed: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BadPath:
    """The path is refused before any lookup: it could mean different things upstream (400)."""

    reason: str


MatchResult = Match | NotFound | MethodNotAllowed | BadPath
