"""The admin API under /admin/, part of the reserved paths: off unless `[proxy.admin]` sets a
bearer token, and for anyone else (no token, a wrong one, an address outside `allow`) it does
not exist: the request is answered as any unknown path.

    POST /admin/reload                 vet the config file, then reload (as SIGHUP does)
    GET  /admin/payments               ?since=&service=&route=&status=&limit= (as the CLI)
    GET  /admin/credits                the open credits
    POST /admin/credits/{key}/void     {"by": "...", "reason": "..."}: a voided credit cannot
                                       be redeemed; who and why stay on its ledger row
    GET  /admin/config                 the loaded config without its secrets
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

import orjson

from mpp_proxy.config.model import AdminSettings, Config
from mpp_proxy.config.redacted import config_document
from mpp_proxy.core.types import Receive, Scope, Send
from mpp_proxy.payments.ledger import void_credit
from mpp_proxy.problems import Problem, problem
from mpp_proxy.state import PaymentStatus, Store
from mpp_proxy.state.query import (
    DayTotal,
    LedgerQuery,
    daily_totals,
    find_payment,
    parse_since,
    payment_document,
    read_ledger,
)

log = logging.getLogger("mpp_proxy.admin")

# Vets the config file and starts the reload: None when accepted, else why it was refused.
Reload = Callable[[], Awaitable[str | None]]

_JSON = (b"content-type", b"application/json")
_NO_STORE = (b"cache-control", b"no-store")
_MAX_BODY = 64 * 1024
_DEFAULT_LIMIT = 100


class AdminAPI:
    """Answers /admin/* for authenticated callers; `handle` returns False for everyone else."""

    __slots__ = ("_config", "_decimals", "_networks", "_reload", "_store", "_token")

    def __init__(
        self, settings: AdminSettings, config: Config, store: Store, reload: Reload | None
    ) -> None:
        # Compared as digests: equal lengths, so the comparison time says nothing of the token.
        self._token = hashlib.sha256(settings.bearer_token.value.encode("utf-8")).digest()
        self._networks = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in settings.allow)
        self._config = config
        self._store = store
        self._reload = reload
        self._decimals = {m.currency: m.decimals for m in config.methods}

    def authenticated(self, scope: Scope) -> bool:
        client = scope.get("client")
        try:
            address = ipaddress.ip_address(client[0]) if client else None
        except ValueError:
            address = None
        if address is None or not any(address in net for net in self._networks):
            return False
        given = b""
        for name, value in scope["headers"]:
            if name == b"authorization":
                given = value
                break
        scheme, _, token = given.partition(b" ")
        if scheme.lower() != b"bearer":
            return False
        return hmac.compare_digest(hashlib.sha256(token.strip()).digest(), self._token)

    async def handle(self, scope: Scope, receive: Receive, send: Send, path: str) -> bool:
        """Answer an /admin/ request; False (nothing sent) when the caller is not let in."""
        if not self.authenticated(scope):
            return False
        method = scope["method"]
        try:
            status, body = await self._dispatch(method, path, scope, receive)
        except _Refused as refused:
            p = refused.problem
            await send({"type": "http.response.start", "status": p.status, "headers": p.headers})
            await send({"type": "http.response.body", "body": p.body})
            return True
        headers = [_JSON, _NO_STORE, (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body if method != "HEAD" else b""})
        return True

    async def _dispatch(
        self, method: str, path: str, scope: Scope, receive: Receive
    ) -> tuple[int, bytes]:
        parts = path.removeprefix("/admin/").split("/")
        if parts == ["reload"]:
            _allow(method, "POST")
            return await self._reload_config()
        if parts == ["payments"]:
            _allow(method, "GET")
            return 200, await self._payments(_query(scope))
        if parts == ["credits"]:
            _allow(method, "GET")
            return 200, await self._credits()
        if len(parts) == 3 and parts[0] == "credits" and parts[2] == "void":
            _allow(method, "POST")
            return 200, await self._void(parts[1], await _json_body(receive))
        if parts == ["config"]:
            _allow(method, "GET")
            return 200, orjson.dumps(config_document(self._config))
        raise _Refused(problem(404, "not-found", "Not found", f"no admin endpoint {path}"))

    async def _reload_config(self) -> tuple[int, bytes]:
        if self._reload is None:
            raise _Refused(
                problem(
                    501,
                    "reload-unavailable",
                    "Reload unavailable",
                    "this process was not started by `mpp-proxy serve`: restart it (or rebuild "
                    "the app that embeds it) to load an edited config",
                )
            )
        refused = await self._reload()
        if refused is not None:
            detail = f"reload refused, still serving the previous config: {refused}"
            raise _Refused(problem(422, "reload-refused", "Reload refused", detail))
        log.info("config reload requested through the admin API")
        return 202, orjson.dumps({"status": "reloading", "config": self._config.source})

    async def _payments(self, params: dict[str, str]) -> bytes:
        query = _ledger_query(params)
        rows = await read_ledger(self._store, query)
        return orjson.dumps(
            {
                "payments": [payment_document(p, self._decimals) for p in rows],
                "days": [_day(d) for d in daily_totals(rows)],
            }
        )

    async def _credits(self) -> bytes:
        rows = await read_ledger(self._store, LedgerQuery(status=PaymentStatus.CREDITED))
        return orjson.dumps({"credits": [payment_document(p, self._decimals) for p in rows]})

    async def _void(self, key: str, body: dict[str, Any]) -> bytes:
        reason = str(body.get("reason", "")).strip()
        by = str(body.get("by", "")).strip() or "admin API"
        if not reason:
            raise _Refused(
                problem(400, "reason-required", "Reason required", 'send {"reason": "..."}')
            )
        try:
            row = await find_payment(self._store, key, PaymentStatus.CREDITED)
        except KeyError as missing:
            detail = str(missing.args[0])
            raise _Refused(problem(404, "no-such-credit", "No such credit", detail)) from None
        voided = await void_credit(self._store, row.key, by=by, reason=reason)
        if voided is None:
            detail = "the credit was redeemed, forfeited or voided meanwhile"
            raise _Refused(problem(409, "credit-changed", "Credit changed", detail))
        log.info("credit %s.. voided through the admin API", row.key[:12])
        return orjson.dumps({"voided": payment_document(voided, self._decimals)})


class _Refused(Exception):
    def __init__(self, p: Problem) -> None:
        self.problem = p


def _allow(method: str, expected: str) -> None:
    allowed = (expected, "HEAD") if expected == "GET" else (expected,)
    if method not in allowed:
        raise _Refused(
            problem(
                405,
                "method-not-allowed",
                "Method not allowed",
                f"this admin endpoint takes {expected}",
                headers=((b"allow", ", ".join(allowed).encode()),),
            )
        )


def _query(scope: Scope) -> dict[str, str]:
    raw: bytes = scope.get("query_string", b"")
    return dict(parse_qsl(raw.decode("latin-1"), keep_blank_values=False))


def _ledger_query(params: dict[str, str]) -> LedgerQuery:
    try:
        status = PaymentStatus(params["status"]) if "status" in params else None
        since = parse_since(params["since"]) if "since" in params else None
        limit = int(params.get("limit", _DEFAULT_LIMIT))
        if limit < 1:
            raise ValueError("limit must be at least 1")
    except ValueError as exc:
        raise _Refused(problem(400, "bad-query", "Bad query", str(exc))) from None
    return LedgerQuery(
        since=since,
        service=params.get("service"),
        route=params.get("route"),
        status=status,
        limit=limit,
    )


def _day(total: DayTotal) -> dict[str, Any]:
    return {
        "day": total.day,
        "currency": total.currency,
        "count": total.count,
        "amount": str(total.amount),
    }


async def _json_body(receive: Receive) -> dict[str, Any]:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > _MAX_BODY:
            raise _Refused(problem(413, "body-too-large", "Body too large", "at most 64 KiB"))
        if not message.get("more_body", False):
            break
    if not body.strip():
        return {}
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if not isinstance(doc, dict):
        raise _Refused(problem(400, "bad-body", "Bad body", "send a JSON object"))
    return doc
