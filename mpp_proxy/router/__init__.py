"""The request router: `/{service}/{path}` to a service route, compiled once into tries."""

from mpp_proxy.router.results import BadPath, Match, MatchResult, MethodNotAllowed, NotFound
from mpp_proxy.router.trie import Router

__all__ = ["BadPath", "Match", "MatchResult", "MethodNotAllowed", "NotFound", "Router"]
