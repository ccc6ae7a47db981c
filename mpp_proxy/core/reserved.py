"""The reserved paths, answered before any routing: health, readiness, the discovery
documents (computed from the config at load, per mount prefix) and, when configured, the admin
API under /admin/ (core/admin.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import orjson

from mpp_proxy.config.model import Config
from mpp_proxy.core.admin import AdminAPI
from mpp_proxy.core.types import HeaderList, Scope, Send
from mpp_proxy.discovery import llms_txt, openapi_document
from mpp_proxy.problems import problem

Handler = Callable[[Scope, Send, bool], Awaitable[None]]
Ready = Callable[[], Awaitable[bool]]

_JSON = (b"content-type", b"application/json")
_MARKDOWN = (b"content-type", b"text/markdown; charset=utf-8")
_DISCOVERY_CACHE = (b"cache-control", b"public, max-age=300")
_NO_STORE = (b"cache-control", b"no-store")
_GET_HEAD = ((b"allow", b"GET, HEAD"),)
# Distinct mount prefixes whose documents are kept (a mounted app sees one or two).
_MAX_PREFIXES = 8


class ReservedPaths:
    """`handlers` maps each reserved path to its handler; anything else is routed.

    A handler takes (scope, send, head_only); `serve` refuses other methods than GET and HEAD.
    """

    __slots__ = ("_config", "_documents", "_ready", "_version", "admin", "handlers")

    def __init__(
        self, config: Config, version: str, ready: Ready, admin: AdminAPI | None = None
    ) -> None:
        self._config = config
        self._version = version
        self._ready = ready
        # /admin/*, for authenticated callers only; None: off (the paths are unknown).
        self.admin = admin
        self._documents: dict[str, tuple[bytes, bytes]] = {}
        self._documents_for("")  # config errors in discovery surface at load
        self.handlers: dict[str, Handler] = {
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/openapi.json": self._openapi,
            "/llms.txt": self._llms,
        }

    def _documents_for(self, prefix: str) -> tuple[bytes, bytes]:
        """(openapi.json, llms.txt) with links under the prefix the app is mounted at."""
        docs = self._documents.get(prefix)
        if docs is None:
            config, version = self._config, self._version
            docs = (
                orjson.dumps(openapi_document(config, version=version, base_url=prefix)),
                llms_txt(config, base_url=prefix).encode("utf-8"),
            )
            if len(self._documents) < _MAX_PREFIXES:
                self._documents[prefix] = docs
        return docs

    async def serve(self, handler: Handler, path: str, scope: Scope, send: Send) -> None:
        method = scope["method"]
        if method in ("GET", "HEAD"):
            await handler(scope, send, method == "HEAD")
            return
        p = problem(
            405,
            "method-not-allowed",
            "Method not allowed",
            f"{path} accepts GET and HEAD",
            headers=_GET_HEAD,
        )
        await send({"type": "http.response.start", "status": 405, "headers": p.headers})
        await send({"type": "http.response.body", "body": p.body})

    async def _healthz(self, scope: Scope, send: Send, head_only: bool) -> None:
        await _answer(send, 200, [_JSON, _NO_STORE], b'{"status":"ok"}', head_only)

    async def _readyz(self, scope: Scope, send: Send, head_only: bool) -> None:
        if await self._ready():
            await _answer(send, 200, [_JSON, _NO_STORE], b'{"status":"ready"}', head_only)
        else:
            await _answer(send, 503, [_JSON, _NO_STORE], b'{"status":"not ready"}', head_only)

    async def _openapi(self, scope: Scope, send: Send, head_only: bool) -> None:
        body = self._documents_for(scope.get("root_path", ""))[0]
        await _answer(send, 200, [_JSON, _DISCOVERY_CACHE], body, head_only)

    async def _llms(self, scope: Scope, send: Send, head_only: bool) -> None:
        body = self._documents_for(scope.get("root_path", ""))[1]
        await _answer(send, 200, [_MARKDOWN, _DISCOVERY_CACHE], body, head_only)


async def _answer(
    send: Send, status: int, headers: HeaderList, body: bytes, head_only: bool
) -> None:
    headers.append((b"content-length", b"%d" % len(body)))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head_only else body})
