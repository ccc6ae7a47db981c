"""Builders for router tests: services from route keys like "GET /v1/x" or "* /v1/files/*"."""

from __future__ import annotations

from decimal import Decimal

from mpp_proxy.config.model import Price, Route, Service
from mpp_proxy.router import Match, MatchResult, Router

BASE = "http://127.0.0.1:1"


def route(key: str, *, paid: bool = False) -> Route:
    method, pattern = key.split(" ", 1)
    price = Price(amount=Decimal("0.01"), pay_with=("usdc",)) if paid else None
    return Route(method=method, pattern=pattern, price=price)


def service(*routes: Route | str, sid: str = "s") -> Service:
    built = tuple(r if isinstance(r, Route) else route(r) for r in routes)
    return Service(id=sid, base_url=BASE, routes=built)


def router(*routes: Route | str, sid: str = "s") -> Router:
    return Router.compile([service(*routes, sid=sid)])


def key_of(result: MatchResult) -> str:
    """The matched route's key, failing the test with the result when it is not a Match."""
    assert isinstance(result, Match), result
    return result.route.key
