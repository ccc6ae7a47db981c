"""The proxy.toml front end: parse, interpolate, check keys, then build through the Python API."""

from __future__ import annotations

import inspect
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mpp_proxy.config.checks import check_keys, closest, redacted, secret_values
from mpp_proxy.config.errors import ConfigError
from mpp_proxy.config.interpolation import substitute_all
from mpp_proxy.config.limits import LIMIT_OPTIONS
from mpp_proxy.config.methods import KINDS, PYTHON_ONLY
from mpp_proxy.config.model import Auth, Config, PaymentMethod, Service
from mpp_proxy.config.presets import PRESETS, SERVICE_OPTIONS, basic, bearer, header, service
from mpp_proxy.config.python_api import Charge, charge, free, make_config

PROXY_KEYS = (
    "secret_key",
    "realm",
    "host",
    "port",
    "state",
    "title",
    "description",
    "categories",
    "allow_test_payments",
    "credit_ttl",
    "challenge_ttl",
    "lease_seconds",
    "trusted_proxies",
    "forwarded_header",
    "replay_ttl",
    "replay_max_bytes",
    "admin",
    # observability tables: [proxy.metrics], [proxy.log], [proxy.tracing], [[proxy.webhooks]]
    "metrics",
    "log",
    "tracing",
    "webhooks",
)
ROUTE_KEYS = (
    "price",
    "pay_with",
    "description",
    "deliver_below",
    "max_body_bytes",
    "settle",
    "on_failure",
    *LIMIT_OPTIONS,
)
# A route table without a price is a free route with limits: it holds only these.
FREE_ROUTE_KEYS = tuple(k for k in LIMIT_OPTIONS if k != "max_spend")
AUTH_KEYS = ("bearer", "header", "value", "basic", "password")

# Values an operator may give as strings (so they can come from ${VAR}) and their real types.
_INT_KEYS = frozenset(
    {
        "port",
        "chain_id",
        "decimals",
        "max_body_bytes",
        "max_connections",
        "deliver_below",
        "burst",
        "max_in_flight",
        "queue",
        "replay_max_bytes",
    }
)
_FLOAT_KEYS = frozenset(
    {
        "credit_ttl",
        "challenge_ttl",
        "lease_seconds",
        "replay_ttl",
        "connect",
        "read",
        "write",
        "pool",
    }
)
_BOOL_KEYS = frozenset(
    {"allow_test_payments", "forward_client_ip", "enabled", "access", "log_query", "limit_headers"}
)
_TOML_LINE = re.compile(r"at line (\d+)")


def load_toml(path: Path, environ: Mapping[str, str]) -> Config:
    """The Config in a proxy.toml; every ConfigError names the file and, where known, the line."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file not found", file=source) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read the config file: {type(exc).__name__}", file=source
        ) from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(exc, source) from None
    secrets: set[str] = secret_values(document)
    try:
        document = substitute_all(document, environ)
        secrets |= secret_values(document)
        return _build(_coerce(document), source)
    except ConfigError as exc:
        located = locate(exc, source, text)
        raise redacted(located, secrets) from None


def _syntax_error(exc: tomllib.TOMLDecodeError, source: str) -> ConfigError:
    message = str(exc)
    found = _TOML_LINE.search(message)
    problem = "TOML syntax error: " + _TOML_LINE.sub("", message).replace("(, column", "(column")
    problem = re.sub(r"\s*\(column \d+\)", "", problem).strip()
    if "Cannot overwrite a value" in message or "twice" in message:
        problem += (
            " -- a key or table is defined twice (each service id, method name and route "
            "may appear only once)"
        )
    return ConfigError(problem, file=source, line=int(found.group(1)) if found else None)


def _coerce(value: Any, key: str = "") -> Any:
    """Numbers and booleans written as strings (typically from ${VAR}) to their real types."""
    if isinstance(value, dict):
        return {k: _coerce(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_coerce(v) for v in value]
    if isinstance(value, str):
        text = value.strip()
        if key in _INT_KEYS and re.fullmatch(r"[+-]?[0-9]+", text):
            return int(text)
        if key in _FLOAT_KEYS and re.fullmatch(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)", text):
            return float(text)
        if key in _BOOL_KEYS and text in ("true", "false"):
            return text == "true"
    return value


def _table(
    value: object, what: str, *, service: str | None = None, key: str | None = None
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be a table", service=service, key=key)
    return value


def _build(document: dict[str, Any], source: str) -> Config:
    check_keys(document, ("proxy", "methods", "services"), "the top level")
    proxy = _table(document.get("proxy", {}), "[proxy]", key="proxy")
    check_keys(proxy, PROXY_KEYS, "[proxy]", prefix="proxy.")
    methods_table = _table(document.get("methods", {}), "[methods]", key="methods")
    services_table = _table(document.get("services", {}), "[services]", key="services")
    methods = [_method(name, table) for name, table in methods_table.items()]
    services = [_service(sid, table) for sid, table in services_table.items()]
    return make_config(**proxy, methods=methods, services=services, source=source)


def _required(builder: Callable[..., Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(all keyword names, required keyword names) of a builder, from its signature."""
    params = [p for p in inspect.signature(builder).parameters.values() if p.kind is p.KEYWORD_ONLY]
    names = tuple(p.name for p in params)
    return names, tuple(p.name for p in params if p.default is inspect.Parameter.empty)


def _method(name: str, value: object) -> PaymentMethod:
    table = dict(_table(value, f"[methods.{name}]", key=f"methods.{name}"))
    kind = table.pop("kind", None)
    if kind is None:
        raise ConfigError(
            f"kind is required: one of {', '.join(KINDS)}", key=f"methods.{name}.kind"
        )
    builder: Callable[..., PaymentMethod] | None = (
        KINDS.get(kind) if isinstance(kind, str) else None
    )
    if builder is None:
        raise ConfigError(
            f"unknown kind {kind!r}{closest(str(kind), KINDS)}; one of {', '.join(KINDS)}",
            key=f"methods.{name}.kind",
        )
    allowed, required = _required(builder)
    for key in PYTHON_ONLY.intersection(table):
        raise ConfigError(
            f"{key} takes a Python callable: build this method in a proxy.py instead",
            key=f"methods.{name}.{key}",
        )
    allowed = tuple(k for k in allowed if k not in PYTHON_ONLY)
    check_keys(table, ("kind", *allowed), f"[methods.{name}]", prefix=f"methods.{name}.")
    for key in required:
        if key not in table:
            raise ConfigError(
                f"missing required key for kind {kind!r}", key=f"methods.{name}.{key}"
            )
    method: PaymentMethod = builder(name, **table)
    return method


def _service(sid: str, value: object) -> Service:
    table = dict(_table(value, f"[services.{sid}]", service=sid))
    preset = table.pop("preset", None)
    common = ("base_url", "routes", *SERVICE_OPTIONS)
    if preset is not None:
        builder = PRESETS.get(preset) if isinstance(preset, str) else None
        if builder is None:
            raise ConfigError(
                f"unknown preset {preset!r}{closest(str(preset), PRESETS)}; "
                f"one of {', '.join(PRESETS)}",
                service=sid,
                key="preset",
            )
        if "auth" in table:
            raise ConfigError(
                f"the {preset} preset builds auth from api_key; remove auth or the preset",
                service=sid,
                key="auth",
            )
        check_keys(table, ("preset", "api_key", *common), f"[services.{sid}]", service=sid)
        for key in ("api_key", "routes"):
            if key not in table:
                raise ConfigError(f"the {preset} preset needs {key}", service=sid, key=key)
        table["routes"] = _routes(sid, table["routes"])
        return builder(sid, **table)
    if "api_key" in table:
        raise ConfigError(
            'api_key goes with a preset; without one write auth = { bearer = "..." } '
            "(or header/value, or basic)",
            service=sid,
            key="api_key",
        )
    check_keys(table, ("preset", "auth", *common), f"[services.{sid}]", service=sid)
    for key in ("base_url", "routes"):
        if key not in table:
            raise ConfigError(f"missing required key {key!r}", service=sid, key=key)
    table["routes"] = _routes(sid, table["routes"])
    if "auth" in table:
        table["auth"] = _auth(sid, table["auth"])
    return service(sid, **table)


def _auth(sid: str, value: object) -> Auth:
    table = _table(value, "auth", service=sid, key="auth")
    check_keys(table, AUTH_KEYS, "auth", service=sid, prefix="auth.")
    forms = [k for k in ("bearer", "header", "basic") if k in table]
    if len(forms) != 1:
        raise ConfigError(
            'auth is one of { bearer = ".." }, { header = "X-Api-Key", value = ".." } '
            'or { basic = "user[:password]" }',
            service=sid,
            key="auth",
        )
    extra = set(table) - {forms[0], {"header": "value", "basic": "password"}.get(forms[0], "")}
    if extra:
        raise ConfigError(
            f"{', '.join(sorted(extra))} does not go with {forms[0]}", service=sid, key="auth"
        )
    try:
        if forms[0] == "bearer":
            return bearer(table["bearer"])
        if forms[0] == "header":
            if "value" not in table:
                raise ConfigError("header auth needs value", key="auth.value")
            return header(table["header"], table["value"])
        return basic(table["basic"], table.get("password", ""))
    except ConfigError as exc:
        raise ConfigError(exc.problem, service=sid, key=exc.key) from None


def _routes(sid: str, value: object) -> dict[str, Any]:
    table = _table(value, "routes", service=sid, key="routes")
    return {key: _route(sid, key, spec) for key, spec in table.items()}


def _route(sid: str, key: str, spec: object) -> Any:
    if spec == "free":
        return free
    if not isinstance(spec, dict):
        raise ConfigError(
            'a route is "free" or a table such as { price = "0.05", pay_with = ["usdc"] }',
            service=sid,
            route=key,
        )
    check_keys(spec, ROUTE_KEYS, "a route", service=sid, route=key)
    if "price" not in spec:
        if spec and set(spec) <= set(FREE_ROUTE_KEYS):
            try:
                return free(**spec)
            except ConfigError as exc:
                raise ConfigError(exc.problem, service=sid, route=key, key=exc.key) from None
        raise ConfigError(
            'a paid route needs price (or write "free"); a free route\'s table holds only '
            + ", ".join(FREE_ROUTE_KEYS),
            service=sid,
            route=key,
        )
    pay_with = spec.get("pay_with", [])
    if isinstance(pay_with, str):
        pay_with = [pay_with]
    if not isinstance(pay_with, list) or not all(isinstance(m, str) for m in pay_with):
        raise ConfigError(
            "pay_with must be a list of method names", service=sid, route=key, key="pay_with"
        )
    if "pay_with" in spec and not pay_with:
        raise ConfigError(
            "pay_with is empty; name a method (or leave it out when only one is defined)",
            service=sid,
            route=key,
            key="pay_with",
        )
    options = {k: v for k, v in spec.items() if k not in ("price", "pay_with")}
    try:
        result: Charge = charge(spec["price"], *pay_with, **options)
    except ConfigError as exc:
        raise ConfigError(exc.problem, service=sid, route=key, key=exc.key) from None
    except TypeError:
        raise ConfigError("invalid route options", service=sid, route=key) from None
    return result


# [proxy.X] tables an error's key may sit in (its line is found inside that table).
_PROXY_TABLES = (["admin"], ["metrics"], ["log"], ["tracing"])


def guess_line(text: str, exc: ConfigError) -> int | None:
    """Best-effort line of the table/key an error names (tomllib keeps no positions)."""
    if exc.line is not None:
        return exc.line
    lines = text.splitlines()
    key_parts = exc.key.split(".") if exc.key else []
    if exc.service is not None:
        table = ["services", exc.service]
        if exc.route is not None:
            found = route_lines(lines, exc.service, exc.route)
            return found[-1] if found else _find(lines, table, None)
    elif key_parts[:1] in (["proxy"], ["methods"]):
        depth = 2 if key_parts[0] == "methods" or key_parts[1:2] in _PROXY_TABLES else 1
        table, key_parts = key_parts[:depth], key_parts[depth:]
    else:
        return None
    return _find(lines, table, key_parts[0] if key_parts else None)


def _find(lines: list[str], table: list[str], key: str | None) -> int | None:
    header = r"\s*\[\s*" + r"\s*\.\s*".join(rf'(?:"{re.escape(p)}"|{re.escape(p)})' for p in table)
    start = next((i for i, line in enumerate(lines) if re.match(header + r"\s*\]", line)), None)
    if start is None:
        return None
    if key is None:
        return start + 1
    pattern = re.compile(rf'\s*(?:"{re.escape(key)}"|{re.escape(key)})\s*=')
    for i in range(start + 1, len(lines)):
        if lines[i].lstrip().startswith("["):
            break
        if pattern.match(lines[i]):
            return i + 1
    return start + 1


def route_lines(lines: list[str], service: str, route: str) -> list[int]:
    """The lines where `service` defines route `route`, in file order.

    Keys are compared as the loader reads them ("get /x" and "GET /x", "/x" and "* /x" are the
    same route), in the service's [routes] table or in [services.ID.routes."KEY"] tables.
    """
    from mpp_proxy.config.checks import parse_route_key

    def normal(key: str) -> str:
        try:
            return " ".join(parse_route_key(key, service=service))
        except ConfigError:
            return key

    target = normal(route)
    table = [_part(p) for p in ("services", service, "routes")]
    header = re.compile(r"\s*\[\s*" + r"\s*\.\s*".join(table) + r'\s*(?:\.\s*"([^"]*)"\s*)?\]')
    entry = re.compile(r'\s*"([^"]*)"\s*=')
    found: list[int] = []
    inside = False
    for number, line in enumerate(lines, 1):
        table_header = header.match(line)
        if table_header:
            if table_header.group(1) is not None and normal(table_header.group(1)) == target:
                found.append(number)
            inside = table_header.group(1) is None
        elif line.lstrip().startswith("["):
            inside = False
        elif inside:
            key = entry.match(line)
            if key and normal(key.group(1)) == target:
                found.append(number)
    return found


def _part(name: str) -> str:
    """One dotted-key part of a table header, bare or quoted."""
    return rf'(?:"{re.escape(name)}"|{re.escape(name)})'


def locate(error: ConfigError, path: str, text: str | None = None) -> ConfigError:
    """`error` with the file and the lines it is about in the proxy.toml at `path` (read from
    disk unless its `text` is given): its key's or route's, and the other route's when two
    routes clash."""
    if not path.endswith(".toml"):
        return error.located(file=path)
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            text = ""
    line = guess_line(text, error)
    other = None
    if error.service is not None and error.other_route is not None:
        lines = text.splitlines()
        others = [n for n in route_lines(lines, error.service, error.other_route) if n != line]
        other = others[0] if others else None
    return error.located(file=path, line=line, other_line=other)
