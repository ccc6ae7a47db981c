"""The loaded config as a plain document with every secret left out (for GET /admin/config).

Secret values become "***"; URLs that may carry a key in their path or query (RPC, facilitator,
Stripe API base) show their origin only, and the state URL and upstream base URLs lose any
password. A Python callable (an EVM settle hook) is named, not shown.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mpp_proxy.config.checks import redact_url, url_origin
from mpp_proxy.config.model import Config, Secret

__all__ = ["config_document"]

HIDDEN = "***"
# URLs whose path or query often holds an API key: only scheme://host[:port] is shown.
_ORIGIN_ONLY = frozenset({"rpc_url", "facilitator_url", "api_base"})
# URLs that may hold a password in their user part.
_USERINFO = frozenset({"base_url", "state"})


def config_document(config: Config) -> dict[str, Any]:
    """Every setting of `config`, JSON-ready, without a secret."""
    doc = _value(config, "")
    assert isinstance(doc, dict)
    return doc


def _value(value: Any, name: str) -> Any:
    if isinstance(value, Secret):
        return HIDDEN if value.value else ""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        if type(value).__name__.endswith("Auth"):
            out["kind"] = type(value).__name__.removesuffix("Auth").lower()
        for f in dataclasses.fields(value):
            out[f.name] = _value(getattr(value, f.name), f.name)
        return out
    if isinstance(value, tuple | list):
        return [_value(v, name) for v in value]
    if isinstance(value, Decimal):
        return format(value, "f")
    if callable(value):
        return f"(Python callable {getattr(value, '__name__', type(value).__name__)})"
    if isinstance(value, str) and value:
        if name in _ORIGIN_ONLY:
            return url_origin(value)
        if name in _USERINFO:
            return _without_password(value)
    return value


def _without_password(url: str) -> str:
    """`url` with any password replaced by ***; unparseable text keeps only its scheme."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return redact_url(url) if parts.username else url
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:{HIDDEN}@{host}"))
    except ValueError:
        return url.split("://", 1)[0] + "://" + HIDDEN
