"""What `Router.match` answers: a match, or why there is none (404, 405, 400)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, NamedTuple, TypeVar

from mpp_proxy.config.model import Route, Service

P = TypeVar("P")


class Match(NamedTuple, Generic[P]):
    """The route a request reached: its compiled plan and the raw path after `/{service.id}`.

    A NamedTuple rather than a frozen dataclass: it is built on every request, and a frozen
    dataclass's __init__ costs about three times as much. The `:param` values are kept as the
    trie captured them; `params` pairs them with their names only when asked.
    """

    plan: P
    upstream_path: str
    route: Route
    service: Service
    names: tuple[str, ...]
    values: Sequence[str]

    @property
    def params(self) -> dict[str, str]:
        """`:param` values by name (decoded path segments)."""
        return dict(zip(self.names, self.values, strict=True))


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


MatchResult = Match[Any] | NotFound | MethodNotAllowed | BadPath
