"""Fast challenges: per-offer precomputed JCS halves and HMAC state, byte-compatible with pympp.

pympp builds every 402 from scratch (route input -> pydantic model -> JCS -> HMAC). Only three
things vary per request: the route scope (`_mppx_scope`: HTTP method, path, query), the nonce
(`opaque._mpp_nonce`) and the expiry. Everything else is encoded once per offer here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import rfc8785

from mpp_proxy.payments.pympp import escape_quoted as _escape_quoted

_PLACEHOLDER = "@@mpp-proxy-scope@@"
# JSON string characters that JCS writes as they are (printable ASCII without `"` and `\`).
_NEEDS_JCS = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def scope_dict(method: str, path: str, query: str) -> dict[str, str]:
    """The `_mppx_scope` pympp's `Request.scope()` derives from the same request.

    `resource` is the percent-decoded path (what `httpx.URL(url).path` gives), `query` the raw
    query string, omitted when empty.
    """
    scope = {"http_method": method, "resource": unquote(path) if "%" in path else path}
    if query:
        scope["query"] = query
    return scope


def scope_json(scope: dict[str, str]) -> bytes:
    """JCS encoding of a scope dict, without the general encoder for plain ASCII values."""
    method = scope["http_method"]
    resource = scope["resource"]
    query = scope.get("query", "")
    if _NEEDS_JCS.search(method) or _NEEDS_JCS.search(resource) or _NEEDS_JCS.search(query):
        return bytes(rfc8785.dumps(scope))
    if query:
        text = f'{{"http_method":"{method}","query":"{query}","resource":"{resource}"}}'
    else:
        text = f'{{"http_method":"{method}","resource":"{resource}"}}'
    return text.encode("ascii")


class Expiry:
    """`expires` strings for challenges issued now, cached per whole second."""

    __slots__ = ("_second", "_text", "ttl")

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._second = -1
        self._text = ""

    def now(self) -> str:
        second = int(time.time() + self.ttl)
        if second != self._second:
            stamp = datetime.fromtimestamp(second, UTC).isoformat()
            self._text = stamp.replace("+00:00", "Z")
            self._second = second
        return self._text


class ChallengeMint:
    """Issues `WWW-Authenticate: Payment` values for one offer (method + wire request)."""

    __slots__ = ("_head", "_mac", "_post", "_pre", "_tail", "wire")

    def __init__(
        self,
        *,
        secret_key: str,
        realm: str,
        method: str,
        intent: str,
        wire: dict[str, Any],
        description: str | None = None,
    ) -> None:
        if "_mppx_scope" in wire:
            raise ValueError("the wire request already carries a scope")
        self.wire = wire
        encoded = bytes(rfc8785.dumps({**wire, "_mppx_scope": _PLACEHOLDER}))
        marker = b'"' + _PLACEHOLDER.encode() + b'"'
        if encoded.count(marker) != 1:
            raise ValueError("the wire request contains the scope placeholder")
        self._pre, self._post = encoded.split(marker)
        self._mac = hmac.new(
            secret_key.encode("utf-8"), f"{realm}|{method}|{intent}|".encode(), hashlib.sha256
        )
        self._head = (
            f'realm="{_escape_quoted(realm)}", method="{_escape_quoted(method)}", '
            f'intent="{_escape_quoted(intent)}", request="'
        )
        self._tail = f', description="{_escape_quoted(description)}"' if description else ""

    def request_b64(self, scope: bytes) -> str:
        return b64url(self._pre + scope + self._post)

    def issue(self, scope: bytes, expires: str, digest: str = "") -> str:
        """One challenge header value bound to this scope and expiry (and body digest, when
        given), with a fresh nonce."""
        request = self.request_b64(scope)
        opaque = b64url(b'{"_mpp_nonce":"' + os.urandom(32).hex().encode() + b'"}')
        mac = self._mac.copy()
        mac.update(f"{request}|{expires}|{digest}|{opaque}".encode())
        challenge_id = b64url(mac.digest())
        bound = f', digest="{_escape_quoted(digest)}"' if digest else ""
        return (
            f'Payment id="{challenge_id}", {self._head}{request}", expires="{expires}"'
            f'{bound}{self._tail}, opaque="{opaque}"'
        )
