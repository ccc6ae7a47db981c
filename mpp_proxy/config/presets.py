"""Services (`mpp_proxy.services`): `service()` for any API; openai, anthropic, stripe presets."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mpp_proxy.config.auth import basic, bearer, header
from mpp_proxy.config.checks import (
    check_bool,
    check_header_name,
    check_int,
    check_nonempty,
    check_number,
    check_service_id,
    check_str,
    check_str_tuple,
    check_url,
    closest,
    parse_price,
    parse_route_key,
    redacted,
    secrets_in,
)
from mpp_proxy.config.errors import ConfigError
from mpp_proxy.config.limits import CAPACITY_OPTIONS, LIMIT_OPTIONS, capacity_of, limits_of
from mpp_proxy.config.model import (
    Auth,
    BasicAuth,
    BearerAuth,
    HeaderAuth,
    Price,
    Route,
    Secret,
    Service,
    Timeouts,
)
from mpp_proxy.config.python_api import Charge, Free, charge, free
from mpp_proxy.config.terms import parse_rule

__all__ = [
    "PRESETS",
    "SERVICE_OPTIONS",
    "Service",
    "anthropic",
    "basic",
    "bearer",
    "charge",
    "free",
    "header",
    "openai",
    "service",
    "stripe",
]

_DEFAULT = Service(id="-", base_url="-", routes=())
_TIMEOUT_KEYS = ("connect", "read", "write", "pool")

# Keyword options every service (hand-built or preset) accepts, besides id, base_url, routes, auth.
SERVICE_OPTIONS = (
    "title",
    "description",
    "strip_headers",
    "strip_response_headers",
    "timeouts",
    "max_body_bytes",
    "forward_client_ip",
    "ca_bundle",
    "max_connections",
    *LIMIT_OPTIONS,
    *CAPACITY_OPTIONS,
)

RouteValue = Charge | Free | str


def service(
    id: str,
    *,
    base_url: str,
    routes: Mapping[str, RouteValue],
    auth: Auth | None = None,
    title: str = "",
    description: str = "",
    strip_headers: Sequence[str] = (),
    strip_response_headers: Sequence[str] = _DEFAULT.strip_response_headers,
    timeouts: Timeouts | Mapping[str, float] | None = None,
    max_body_bytes: int = _DEFAULT.max_body_bytes,
    forward_client_ip: bool = False,
    ca_bundle: str | None = None,
    max_connections: int = _DEFAULT.max_connections,
    preset: str | None = None,
    limits: object = None,
    max_spend: object = None,
    on_store_error: object = None,
    limit_headers: object = None,
    max_in_flight: object = None,
    queue: object = 0,
    queue_timeout: object = 2.0,
    shed_above: object = None,
) -> Service:
    """An upstream API served under `/{id}/...`; routes map "METHOD /path" to free or charge().

    `base_url` may carry a path prefix; a trailing '/' is dropped. `preset` records which preset
    built the service (informational only). `limits`, `max_spend`, `on_store_error` and
    `limit_headers` apply to every route (counted across the service); `max_in_flight`,
    `queue`, `queue_timeout` and `shed_above` cap its concurrency (see limits.md).
    """
    sid = check_service_id(id)
    try:
        _check_auth(auth)
        return Service(
            id=sid,
            base_url=check_url(base_url, "base_url").rstrip("/"),
            routes=_routes(sid, routes),
            title=check_str(title, "title"),
            description=check_str(description, "description"),
            auth=auth,
            strip_headers=_header_names(strip_headers, "strip_headers"),
            strip_response_headers=_header_names(strip_response_headers, "strip_response_headers"),
            timeouts=_timeouts(timeouts),
            max_body_bytes=check_int(max_body_bytes, "max_body_bytes", low=0),
            forward_client_ip=check_bool(forward_client_ip, "forward_client_ip"),
            ca_bundle=None if ca_bundle is None else _ca_bundle(ca_bundle),
            max_connections=check_int(max_connections, "max_connections", low=1),
            preset=preset,
            limits=limits_of(limits, max_spend, on_store_error, limit_headers),
            capacity=capacity_of(max_in_flight, queue, queue_timeout, shed_above),
        )
    except ConfigError as exc:
        located = (
            exc
            if exc.service is not None
            else ConfigError(exc.problem, service=sid, route=exc.route, key=exc.key, line=exc.line)
        )
        raise redacted(located, secrets_in(auth)) from None


def _check_auth(auth: Auth | None) -> None:
    if auth is not None and not isinstance(auth, BearerAuth | HeaderAuth | BasicAuth):
        raise ConfigError(
            f"auth must be built with bearer(), header() or basic(), not {type(auth).__name__}",
            key="auth",
        )


def _ca_bundle(value: str) -> str:
    """A PEM file that loads as trust roots: a bad one would kill every worker at startup."""
    path = check_nonempty(value, "ca_bundle")
    try:
        ssl.create_default_context(cafile=path)
    except FileNotFoundError:
        raise ConfigError(f"no such file: {path!r}", key="ca_bundle") from None
    except ssl.SSLError:  # an OSError too: test it first
        raise ConfigError(
            f"no certificate could be loaded from {path!r} (expected PEM)", key="ca_bundle"
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path!r}: {exc.strerror}", key="ca_bundle") from None
    return path


def _header_names(names: Sequence[str], key: str) -> tuple[str, ...]:
    out: list[str] = []
    for name in check_str_tuple(names, key):
        lower = check_header_name(name, key)
        if lower not in out:
            out.append(lower)
    return tuple(out)


def _timeouts(value: Timeouts | Mapping[str, float] | None) -> Timeouts:
    if value is None:
        return Timeouts()
    if isinstance(value, Timeouts):
        items: Mapping[str, object] = {k: getattr(value, k) for k in _TIMEOUT_KEYS}
    elif isinstance(value, Mapping):
        items = value
    else:
        raise ConfigError("must be a table of connect, read, write, pool", key="timeouts")
    for name in items:
        if name not in _TIMEOUT_KEYS:
            raise ConfigError(
                f"unknown timeout {name!r}{closest(name, _TIMEOUT_KEYS)}; "
                f"valid: {', '.join(_TIMEOUT_KEYS)}",
                key=f"timeouts.{name}",
            )
    seconds = {k: check_number(v, f"timeouts.{k}") for k, v in items.items()}
    return Timeouts(**seconds)


def _routes(service_id: str, routes: Mapping[str, RouteValue]) -> tuple[Route, ...]:
    if not isinstance(routes, Mapping):
        raise ConfigError('routes must map "METHOD /path" to free or charge(...)', key="routes")
    out: list[Route] = []
    seen: dict[tuple[str, str], str] = {}
    for key, value in routes.items():
        method, pattern = parse_route_key(key, service=service_id)
        if (method, pattern) in seen:
            first = seen[method, pattern]
            raise ConfigError(
                f"the same route as {first!r}", service=service_id, route=key, other_route=first
            )
        seen[method, pattern] = key
        out.append(_route(service_id, key, method, pattern, value))
    return tuple(out)


def _route(service_id: str, key: str, method: str, pattern: str, value: RouteValue) -> Route:
    if isinstance(value, Free):
        return Route(method, pattern, limits=value.limits)
    if value == "free":
        return Route(method, pattern)
    if not isinstance(value, Charge):
        raise ConfigError(
            'a route is free or charge("0.05", method)' + f", not {type(value).__name__}",
            service=service_id,
            route=key,
        )
    try:
        rule = parse_rule(value.price) if isinstance(value.price, Mapping) else None
        amount = min(rule.amounts) if rule is not None else parse_price(value.price)
        description = check_str(value.description, "description")
        deliver_below = check_int(value.deliver_below, "deliver_below", low=100, high=600)
        limit = value.max_body_bytes
        if limit is not None:
            check_int(limit, "max_body_bytes", low=0)
    except ConfigError as exc:
        raise ConfigError(exc.problem, service=service_id, route=key, key=exc.key) from None
    return Route(
        method,
        pattern,
        Price(amount, value.pay_with, rule),
        description=description,
        deliver_below=deliver_below,
        max_body_bytes=limit,
        limits=value.limits,
        settle=value.settle,
        on_failure=value.on_failure,
    )


@dataclass(frozen=True, slots=True)
class _Preset:
    """What a preset fixes: the upstream, how api_key becomes auth, the client headers stripped."""

    base_url: str
    auth: Callable[[str | Secret], Auth]
    strip_headers: tuple[str, ...]


_PRESETS = {
    "openai": _Preset("https://api.openai.com", bearer, ("openai-organization", "openai-project")),
    "anthropic": _Preset("https://api.anthropic.com", lambda key: header("x-api-key", key), ()),
    "stripe": _Preset("https://api.stripe.com", basic, ("stripe-account",)),
}


def _preset(
    name: str,
    id: str,
    api_key: str | Secret,
    routes: Mapping[str, RouteValue],
    base_url: str | None,
    options: Mapping[str, Any],
) -> Service:
    """The service a preset builds; errors name the service id and the option at fault."""
    spec = _PRESETS[name]
    try:
        for option in options:
            if option == "auth":
                raise ConfigError(
                    f"the {name} preset builds auth from api_key; use service() for other auth",
                    key="auth",
                )
            if option not in SERVICE_OPTIONS:
                raise ConfigError(
                    f"unknown option {option!r}{closest(option, SERVICE_OPTIONS)}", key=option
                )
        if not isinstance(api_key, str | Secret):
            raise ConfigError(f"must be a string, not {type(api_key).__name__}", key="api_key")
        try:
            auth = spec.auth(api_key)
        except ConfigError as exc:
            raise ConfigError(exc.problem, key="api_key") from None
        return service(
            id,
            base_url=spec.base_url if base_url is None else base_url,
            routes=routes,
            auth=auth,
            preset=name,
            **{
                **options,
                "strip_headers": (
                    *spec.strip_headers,
                    *check_str_tuple(options.get("strip_headers", ()), "strip_headers"),
                ),
            },
        )
    except ConfigError as exc:
        if exc.service is not None:
            raise
        raise ConfigError(exc.problem, service=id, key=exc.key) from None


def openai(
    id: str = "openai",
    *,
    api_key: str | Secret,
    routes: Mapping[str, RouteValue],
    base_url: str | None = None,
    **service_options: Any,
) -> Service:
    """OpenAI: Bearer auth; the client's OpenAI-Organization and OpenAI-Project are stripped."""
    return _preset("openai", id, api_key, routes, base_url, service_options)


def anthropic(
    id: str = "anthropic",
    *,
    api_key: str | Secret,
    routes: Mapping[str, RouteValue],
    base_url: str | None = None,
    **service_options: Any,
) -> Service:
    """Anthropic: `x-api-key`; the client's `anthropic-version` header passes through."""
    return _preset("anthropic", id, api_key, routes, base_url, service_options)


def stripe(
    id: str = "stripe",
    *,
    api_key: str | Secret,
    routes: Mapping[str, RouteValue],
    base_url: str | None = None,
    **service_options: Any,
) -> Service:
    """Stripe: Basic base64(key:); the client's Stripe-Account header is stripped."""
    return _preset("stripe", id, api_key, routes, base_url, service_options)


# The TOML `preset = "..."` names.
PRESETS = {"openai": openai, "anthropic": anthropic, "stripe": stripe}
