"""Store selection: `open_store(url)` turns a state URL into a (not yet opened) Store backend."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from mpp_proxy.state.base import (
    HELD_STATUSES,
    BucketSpec,
    OutboxEntry,
    Payment,
    PaymentStatus,
    Store,
    Taken,
    Totals,
)

__all__ = [
    "ACCEPTED_SCHEMES",
    "HELD_STATUSES",
    "BucketSpec",
    "OutboxEntry",
    "Payment",
    "PaymentStatus",
    "Store",
    "Taken",
    "Totals",
    "open_store",
    "redact_url",
]

ACCEPTED_SCHEMES: Final = ("memory://", "sqlite:///PATH", "redis://HOST:PORT/DB", "rediss://")


def open_store(url: str) -> Store:
    """The backend for a state URL; call `await store.open()` before use.

    memory://                        in-process, lost on exit (tests, demos)
    sqlite:///relative/path.db       file relative to the working directory
    sqlite:////absolute/path.db      (four slashes: absolute); sqlite:///:memory: for one process
        ?synchronous=normal|full     (default normal: survives kill -9; full: also power loss)
        ?busy_timeout_ms=10000       how long a writer waits for another process's lock
    redis://[:password@]host:port/db, rediss://...   (Redis >= 6.2)
        ?key_prefix=mpp-proxy:       namespace for every key (several proxies on one Redis)

    Raises ValueError for an unknown scheme or a malformed URL; the message never contains a
    password.
    """
    scheme, sep, _ = url.partition(":")
    scheme = scheme.lower()
    if not sep:
        raise ValueError(f"the state URL has no scheme: accepted are {', '.join(ACCEPTED_SCHEMES)}")
    if scheme not in {"memory", "sqlite", "redis", "rediss"}:
        # Only something shaped like a scheme is echoed: a mistyped URL may start with a secret.
        shown = repr(scheme) if re.fullmatch(r"[a-z][a-z0-9+.-]{0,19}", scheme) else "(unreadable)"
        raise ValueError(
            f"unsupported state URL scheme {shown}: accepted are {', '.join(ACCEPTED_SCHEMES)}"
        )
    if scheme == "memory":
        if url.lower() not in {"memory://", "memory:"}:
            raise ValueError("a memory state URL takes no host or path: use memory://")
        from mpp_proxy.state.memory import MemoryStore

        return MemoryStore()
    if scheme == "sqlite":
        return _open_sqlite(url)
    return _open_redis(url)


def _open_sqlite(url: str) -> Store:
    from mpp_proxy.state.sqlite import SQLiteStore

    if not url.lower().startswith("sqlite:///"):
        raise ValueError(
            "a sqlite state URL is sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    rest = url[len("sqlite:///") :]
    path, _, query = rest.partition("?")
    path = unquote(path)
    if not path:
        raise ValueError("the sqlite state URL has no file path: sqlite:///mpp-proxy-state.db")
    options = dict(parse_qsl(query, keep_blank_values=True))
    synchronous = options.pop("synchronous", "normal")
    busy = options.pop("busy_timeout_ms", "10000")
    if options:
        raise ValueError(
            f"unknown sqlite state URL option(s) {', '.join(sorted(options))}:"
            " accepted are synchronous, busy_timeout_ms"
        )
    try:
        busy_ms = int(busy)
    except ValueError:
        raise ValueError("sqlite busy_timeout_ms must be an integer (milliseconds)") from None
    return SQLiteStore(path, synchronous=synchronous, busy_timeout_ms=busy_ms)


def _open_redis(url: str) -> Store:
    import importlib.util

    if importlib.util.find_spec("redis") is None:
        raise ValueError("redis:// state needs the redis client: pip install 'mpp-proxy[redis]'")
    from mpp_proxy.state.redis import DEFAULT_PREFIX, RedisStore

    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 -- raises on a malformed port
    except ValueError:
        raise ValueError(f"malformed redis state URL {redact_url(url)!r}") from None
    if not parts.hostname and not parts.path:
        raise ValueError("a redis state URL needs a host: redis://127.0.0.1:6379/0")
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = DEFAULT_PREFIX
    kept = []
    for name, value in query:
        if name == "key_prefix":
            prefix = value
        else:
            kept.append((name, value))
    client_url = urlunsplit(parts._replace(query=urlencode(kept)))
    return RedisStore(client_url, key_prefix=prefix)


def redact_url(url: str) -> str:
    """`url` safe to print: any password in it replaced by ***."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return url.split("://", 1)[0] + "://***"


if TYPE_CHECKING:
    from mpp.store import ExpiringStore as _PymppExpiringStore
    from mpp.store import Store as _PymppStore

    from mpp_proxy.state.memory import MemoryStore
    from mpp_proxy.state.redis import RedisStore
    from mpp_proxy.state.sqlite import SQLiteStore

    def _stores_fit_pympp(
        m: MemoryStore, s: SQLiteStore, r: RedisStore, any_store: Store
    ) -> tuple[_PymppExpiringStore, ...]:
        # mypy proves the backends are pympp stores (with expiry) and every Store is a pympp one.
        plain: _PymppStore = any_store
        del plain
        return (m, s, r)
