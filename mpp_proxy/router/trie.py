"""The compiled router: one trie per service, matched segment by segment with backtracking."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar, overload

from mpp_proxy.config.errors import ConfigError
from mpp_proxy.config.model import ANY_METHOD, Route, Service
from mpp_proxy.router.paths import decode_segment, unsafe_reason
from mpp_proxy.router.patterns import Segment, parse_pattern
from mpp_proxy.router.results import BadPath, Match, MethodNotAllowed, NotFound

P = TypeVar("P")


class _Entry:
    """A route at a leaf: its compiled plan, the names of the params its shape captures (in path
    order), and the ready-made match head for paths without params."""

    __slots__ = ("names", "plan", "route", "service")

    def __init__(self, service: Service, route: Route, names: tuple[str, ...], plan: Any) -> None:
        self.service = service
        self.route = route
        self.names = names
        self.plan = plan


class _Leaf:
    """The routes sharing one shape, resolved per method once at compile time."""

    __slots__ = ("allowed", "any", "by_method", "explicit")

    def __init__(self) -> None:
        self.explicit: dict[str, _Entry] = {}
        self.any: _Entry | None = None
        self.by_method: dict[str, _Entry] = {}
        self.allowed: frozenset[str] = frozenset()

    def add(self, service_id: str, entry: _Entry) -> None:
        method = entry.route.method
        other = self.any if method == ANY_METHOD else self.explicit.get(method)
        if other is not None:
            first, second = sorted((other.route.key, entry.route.key))
            raise ConfigError(
                f"can never be told apart from route {first!r}: same method and same path shape "
                "(parameter names do not count)",
                service=service_id,
                route=second,
                other_route=first,
            )
        if method == ANY_METHOD:
            self.any = entry
        else:
            self.explicit[method] = entry

    def finish(self) -> None:
        self.by_method = dict(self.explicit)
        # HEAD is GET without a body (RFC 9110 9.3.2), so it takes the GET route's terms
        # before a "*" route's; an explicit HEAD route still wins.
        get = self.explicit.get("GET")
        if get is not None and "HEAD" not in self.by_method:
            self.by_method["HEAD"] = get
        self.allowed = frozenset(self.by_method)

    def lookup(self, method: str) -> _Entry | None:
        return self.by_method.get(method) or self.any


class _Node:
    """Children by precedence: static segments (decoded text), one `:param`, one `*` tail."""

    __slots__ = ("end", "param", "static", "tail")

    def __init__(self) -> None:
        self.static: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.tail: _Leaf | None = None
        self.end: _Leaf | None = None


class _ServiceTrie:
    """One service's routes: the trie and a direct index of its all-static shapes."""

    __slots__ = ("entries", "exact", "root", "service")

    def __init__(self, service: Service) -> None:
        self.service = service
        self.root = _Node()
        # All-static shapes by their path: such a shape beats every other one matching the same
        # path, so a clean path that finds its method here needs no trie walk at all.
        self.exact: dict[str, _Leaf] = {}
        self.entries: list[_Entry] = []


def _find(
    node: _Node, segs: list[str], i: int, n: int, method: str, values: list[str]
) -> _Entry | None:
    # Depth first in precedence order, so the first entry found is the best one; `values`
    # holds the param segments of the branch being tried.
    if i == n:
        return None if node.end is None else node.end.lookup(method)
    seg = segs[i]
    child = node.static.get(seg)
    if child is not None:
        found = _find(child, segs, i + 1, n, method, values)
        if found is not None:
            return found
    if node.param is not None and seg:
        values.append(seg)
        found = _find(node.param, segs, i + 1, n, method, values)
        if found is not None:
            return found
        values.pop()
    # The tail takes one or more segments: anything but a lone trailing slash.
    if node.tail is not None and (seg or i < n - 1):
        return node.tail.lookup(method)
    return None


def _shapes(node: _Node, segs: list[str], i: int, n: int, out: list[_Leaf]) -> None:
    """Every leaf whose shape matches the path, whatever the method (the 404/405 path only)."""
    if i == n:
        if node.end is not None:
            out.append(node.end)
        return
    seg = segs[i]
    child = node.static.get(seg)
    if child is not None:
        _shapes(child, segs, i + 1, n, out)
    if node.param is not None and seg:
        _shapes(node.param, segs, i + 1, n, out)
    if node.tail is not None and (seg or i < n - 1):
        out.append(node.tail)


def _segments(upstream: str) -> list[str]:
    return [decode_segment(s) for s in upstream[1:].split("/")]


_NO_VALUES: tuple[str, ...] = ()


def _route_itself(service: Service, route: Route) -> Route:
    return route


class Router(Generic[P]):
    """Services compiled into tries; `match` is called on every request and allocates little.

    Each route carries a plan, built once by the `plan` function given to `compile` (the core
    keeps there everything the hot path needs for the route); a match hands it back as it is.
    """

    __slots__ = ("_services",)

    def __init__(self, services: dict[str, _ServiceTrie]) -> None:
        self._services = services

    @overload
    @staticmethod
    def compile(services: Sequence[Service]) -> Router[Route]: ...

    @overload
    @staticmethod
    def compile(services: Sequence[Service], plan: Callable[[Service, Route], P]) -> Router[P]: ...

    @staticmethod
    def compile(
        services: Sequence[Service], plan: Callable[[Service, Route], Any] = _route_itself
    ) -> Router[Any]:
        """Build the tries; ConfigError for a bad pattern or two routes that cannot be told apart.

        Routes are inserted in a canonical order, so the order in the config never changes a
        result (nor which conflict is reported first). Plans are built after the tries, so a
        route conflict is reported before anything a plan would check.
        """
        tries: dict[str, _ServiceTrie] = {}
        for service in services:
            sid = service.id
            if not sid or "/" in sid or sid in (".", "..") or unsafe_reason("/" + sid) is not None:
                raise ConfigError(
                    "a service id must be one safe path segment", service=sid or "<empty>"
                )
            if sid in tries:
                raise ConfigError("two services have this id", service=sid)
            trie = _ServiceTrie(service)
            leaves: list[_Leaf] = []
            for route in sorted(service.routes, key=lambda r: (r.pattern, r.method)):
                _insert(trie, route, parse_pattern(sid, route), leaves)
            for leaf in leaves:
                leaf.finish()
            tries[sid] = trie
        for trie in tries.values():
            for entry in trie.entries:
                entry.plan = plan(trie.service, entry.route)
        return Router(tries)

    def match(self, method: str, raw_path: str) -> Match[P] | NotFound | MethodNotAllowed | BadPath:
        """Route `method raw_path`; raw_path is the latin-1 str of the raw request path."""
        clean = _plain(raw_path)
        if not clean:
            reason = unsafe_reason(raw_path)
            if reason is not None:
                return BadPath(reason)
        slash = raw_path.find("/", 1)
        if slash < 0:
            sid, upstream = raw_path[1:], "/"
        else:
            sid, upstream = raw_path[1:slash], raw_path[slash:]
        trie = self._services.get(sid)
        if trie is None:
            return NotFound("unknown service" if sid else "no service in path")
        if clean:
            leaf = trie.exact.get(upstream)
            if leaf is not None:
                entry = leaf.by_method.get(method) or leaf.any
                if entry is not None:
                    return _new_match(
                        Match,
                        (entry.plan, upstream, entry.route, entry.service, (), _NO_VALUES),
                    )
            segs = upstream[1:].split("/")
        else:
            segs = _segments(upstream)
        values: list[str] = []
        found = _descend(trie.root, segs, values)
        entry = None if found is None else (found.by_method.get(method) or found.any)
        if entry is None:
            values.clear()
            entry = _find(trie.root, segs, 0, len(segs), method, values)
            if entry is None:
                return _no_match(trie.root, segs, upstream)
        return _new_match(
            Match, (entry.plan, upstream, entry.route, entry.service, entry.names, values)
        )


_new_match = tuple.__new__


def _plain(raw_path: str) -> bool:
    """The common path: plain printable ASCII with none of the characters the safety rules look
    at; such a path is safe and already decoded. Anything else takes the full checks."""
    return not (
        raw_path[:1] != "/"
        or not raw_path.isascii()
        or not raw_path.isprintable()
        or "%" in raw_path
        or "\\" in raw_path
        or "//" in raw_path
        or "/." in raw_path
        or "#" in raw_path
        or "?" in raw_path
    )


def _descend(node: _Node, segs: list[str], values: list[str]) -> _Leaf | None:
    """Greedy descent (static, else param, else tail): when it lands on a route it is the one
    the full backtracking search would find first, without a call per segment. Only the last
    segment can be empty (a trailing slash): neither a param nor a tail takes it."""
    for seg in segs:
        child = node.static.get(seg)
        if child is None:
            if not seg:
                return None
            child = node.param
            if child is None:
                return node.tail
            values.append(seg)
        node = child
    return node.end


def _no_match(root: _Node, segs: list[str], upstream: str) -> NotFound | MethodNotAllowed:
    leaves: list[_Leaf] = []
    _shapes(root, segs, 0, len(segs), leaves)
    if leaves:
        allowed: set[str] = set()
        for leaf in leaves:
            allowed |= leaf.allowed
        return MethodNotAllowed(tuple(sorted(allowed)))
    # The trailing slash is significant; say so when the other spelling would have matched.
    if upstream != "/":
        other = upstream[:-1] if upstream.endswith("/") else upstream + "/"
        other_segs = _segments(other)
        _shapes(root, other_segs, 0, len(other_segs), leaves)
        if leaves:
            which = "without" if upstream.endswith("/") else "with"
            return NotFound(f"no route for this path; one matches it {which} the trailing slash")
    return NotFound("no route for this path")


def _insert(
    trie: _ServiceTrie, route: Route, segments: tuple[Segment, ...], leaves: list[_Leaf]
) -> None:
    node = trie.root
    names: list[str] = []
    leaf: _Leaf | None
    for seg in segments:
        if seg.kind == "static":
            child = node.static.get(seg.text)
            if child is None:
                child = node.static[seg.text] = _Node()
            node = child
        elif seg.kind == "param":
            names.append(seg.text)
            if node.param is None:
                node.param = _Node()
            node = node.param
        else:
            leaf = node.tail
            if leaf is None:
                leaf = node.tail = _Leaf()
                leaves.append(leaf)
            break
    else:
        leaf = node.end
        if leaf is None:
            leaf = node.end = _Leaf()
            leaves.append(leaf)
        if not names:
            trie.exact["/" + "/".join(s.text for s in segments)] = leaf
    entry = _Entry(trie.service, route, tuple(names), None)
    leaf.add(trie.service.id, entry)
    trie.entries.append(entry)
