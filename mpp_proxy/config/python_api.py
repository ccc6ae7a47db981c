"""The names a proxy.py uses (env, free, charge, make_config) and the whole-config checks."""

from __future__ import annotations

import contextvars
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from decimal import Decimal
from typing import Any

from mpp_proxy.config.checks import (
    check_bool,
    check_int,
    check_keys,
    check_networks,
    check_nonempty,
    check_number,
    check_str,
    check_str_tuple,
    closest,
    decimal_places,
    redacted,
    secret,
    secret_values,
    secrets_in,
)
from mpp_proxy.config.errors import ConfigError
from mpp_proxy.config.limits import forwarded_header as check_forwarded_header
from mpp_proxy.config.limits import limits_of, spend_base_units, trusted_networks
from mpp_proxy.config.model import (
    LOOPBACK,
    AdminSettings,
    Config,
    Limits,
    ObserveSettings,
    PaymentMethod,
    ProxySettings,
    Route,
    Secret,
    Service,
    SpendCap,
    TestMoneyMethod,
)
from mpp_proxy.config.observe import observe_settings
from mpp_proxy.config.terms import check_route_terms

__all__ = [
    "Charge",
    "Free",
    "admin",
    "charge",
    "check_config",
    "config_warnings",
    "env",
    "free",
    "make_config",
    "test_methods_not_allowed",
    "using_environ",
]

_DEFAULTS = ProxySettings()
_NO_LIMITS = Limits()

# The environment `env()` reads: os.environ, or what load_config(path, environ=...) was given.
_environ: contextvars.ContextVar[Mapping[str, str] | None] = contextvars.ContextVar(
    "mpp_proxy_environ", default=None
)


@contextmanager
def using_environ(environ: Mapping[str, str] | None) -> Iterator[None]:
    """Make `env()` read `environ` (os.environ when None) while a proxy.py runs."""
    token = _environ.set(environ)
    try:
        yield
    finally:
        _environ.reset(token)


def env(name: str, default: str | None = None) -> str:
    """The environment variable `name`; a ConfigError naming it when unset without a default."""
    environ = _environ.get()
    value = (os.environ if environ is None else environ).get(name)
    if value is None:
        if default is None:
            raise ConfigError(f"environment variable {name} is not set")
        return default
    return value


class Free:
    """The `free` sentinel: a route anyone may call without paying.

    `free(limits=[...])` is a free route with limits (the keys of LIMIT_OPTIONS but max_spend).
    """

    __slots__ = ("limits",)

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits if limits is not None else Limits()

    def __repr__(self) -> str:
        return "free" if self.limits.empty else f"free(limits={self.limits!r})"

    def __call__(
        self,
        *,
        limits: object = None,
        on_store_error: object = None,
        limit_headers: object = None,
    ) -> Free:
        return Free(limits_of(limits, None, on_store_error, limit_headers))


free = Free()


@dataclass(frozen=True, slots=True)
class Charge:
    """A paid route's terms before it is attached to a route key; see `charge()`."""

    price: str | int | Decimal | Mapping[str, object]
    pay_with: tuple[str, ...] = ()
    description: str = ""
    deliver_below: int = 400
    max_body_bytes: int | None = None
    limits: Limits = _NO_LIMITS
    settle: str | None = None
    on_failure: str | None = None


def charge(
    price: str | int | Decimal | Mapping[str, object],
    *methods: PaymentMethod | str,
    description: str = "",
    deliver_below: int = 400,
    max_body_bytes: int | None = None,
    limits: object = None,
    max_spend: object = None,
    on_store_error: object = None,
    limit_headers: object = None,
    settle: str | None = None,
    on_failure: str | None = None,
) -> Charge:
    """A paid route: `price` in the currency's display unit ("0.05"), offered through `methods`.

    `price` may also be a rule computed from the request, written as in proxy.toml:
    `{"from": "json:model", "table": {"gpt-4o": "0.05"}, "default": "0.02"}` or
    `{"from": "json:max_tokens", "tiers": [{"upto": 1000, "price": "0.01"}]}` (`from` is
    `json:<field>`, `query:<name>` or `size`).
    With no methods the route is offered through the only method defined (an error when there
    are several). Upstream statuses below `deliver_below` count as delivered. `settle` ("after" or
    "before") and `on_failure` ("credit" or "refund") override the methods' own. `limits` (rate
    limits), `max_spend` (spend caps) and the rest are decided before payment: see limits.md.
    """
    names: list[str] = []
    for method in methods:
        name = method if isinstance(method, str) else getattr(method, "name", None)
        if not isinstance(name, str):
            raise ConfigError(
                f"charge() takes payment methods or their names, not {type(method).__name__}",
                key="pay_with",
            )
        if name in names:
            raise ConfigError(f"method {name!r} is offered twice", key="pay_with")
        names.append(name)
    decided = limits_of(limits, max_spend, on_store_error, limit_headers)
    return Charge(
        price,
        tuple(names),
        description,
        deliver_below,
        max_body_bytes,
        limits=decided,
        settle=settle,
        on_failure=on_failure,
    )


def make_config(
    *,
    secret_key: str | Secret | None = None,
    realm: str = _DEFAULTS.realm,
    host: str = _DEFAULTS.host,
    port: int = _DEFAULTS.port,
    state: str = _DEFAULTS.state,
    title: str = _DEFAULTS.title,
    description: str = _DEFAULTS.description,
    categories: Sequence[str] = (),
    allow_test_payments: bool = False,
    credit_ttl: float = _DEFAULTS.credit_ttl,
    challenge_ttl: float = _DEFAULTS.challenge_ttl,
    lease_seconds: float = _DEFAULTS.lease_seconds,
    trusted_proxies: Sequence[str] = (),
    forwarded_header: str = _DEFAULTS.forwarded_header,
    replay_ttl: float = _DEFAULTS.replay_ttl,
    replay_max_bytes: int = _DEFAULTS.replay_max_bytes,
    admin: AdminSettings | Mapping[str, object] | None = None,
    methods: Sequence[PaymentMethod] = (),
    services: Sequence[Service] = (),
    source: str = "<memory>",
    observe: ObserveSettings | None = None,
    metrics: Mapping[str, Any] | None = None,
    log: Mapping[str, Any] | None = None,
    tracing: Mapping[str, Any] | None = None,
    webhooks: Sequence[Mapping[str, Any]] = (),
) -> Config:
    """A checked Config: the same checks the TOML loader runs, in config order."""
    try:
        settings = ProxySettings(
            secret_key=_secret_key(secret_key),
            realm=_realm(realm),
            host=check_nonempty(host, "proxy.host"),
            port=check_int(port, "proxy.port", low=0, high=65535),
            state=check_nonempty(state, "proxy.state"),
            title=check_str(title, "proxy.title"),
            description=check_str(description, "proxy.description"),
            categories=check_str_tuple(categories, "proxy.categories"),
            allow_test_payments=check_bool(allow_test_payments, "proxy.allow_test_payments"),
            credit_ttl=check_number(credit_ttl, "proxy.credit_ttl"),
            challenge_ttl=check_number(challenge_ttl, "proxy.challenge_ttl"),
            lease_seconds=check_number(lease_seconds, "proxy.lease_seconds"),
            trusted_proxies=trusted_networks(trusted_proxies),
            forwarded_header=check_forwarded_header(forwarded_header),
            replay_ttl=check_number(replay_ttl, "proxy.replay_ttl"),
            replay_max_bytes=check_int(replay_max_bytes, "proxy.replay_max_bytes", low=0),
            admin=_admin(admin),
        )
        watch = observe or observe_settings(
            metrics=metrics, log=log, tracing=tracing, webhooks=webhooks
        )
        method_list, resolved = _resolved(methods, services, settings)
    except ConfigError as exc:
        sinks = {"metrics": metrics, "tracing": tracing, "webhooks": webhooks}
        hidden = _secrets(secret_key, methods, services, observe, admin, sinks)
        raise redacted(exc, hidden) from None
    return Config(
        proxy=settings, methods=method_list, services=resolved, source=source, observe=watch
    )


def _secrets(secret_key: str | Secret | None, *parts: Any) -> set[str]:
    """Every secret a config error message must not show (the ones a caller passed as text
    too)."""
    *models, sinks = parts
    secrets = secrets_in(secret_key, *models)
    secrets |= secret_values(sinks)
    if isinstance(secret_key, str):
        secrets.add(secret_key)
    return secrets


def _resolved(
    methods: Sequence[PaymentMethod], services: Sequence[Service], settings: ProxySettings
) -> tuple[tuple[PaymentMethod, ...], tuple[Service, ...]]:
    """The methods, checked unique, and the services with their routes' methods resolved."""
    method_list = _unique_methods(methods)
    by_name = {m.name: m for m in method_list}
    return method_list, tuple(
        _resolve_service(s, by_name, settings) for s in _unique_services(services)
    )


def check_config(config: Config) -> Config:
    """`config` after the whole-config checks of make_config (for a Config built by hand)."""
    settings = {f.name: getattr(config.proxy, f.name) for f in fields(ProxySettings)}
    return make_config(
        **settings,
        methods=config.methods,
        services=config.services,
        source=config.source,
        observe=config.observe,
    )


# An HMAC-SHA256 key shorter than its output is guessable offline from one challenge.
MIN_SECRET_KEY_BYTES = 32


def _secret_key(value: str | Secret | None) -> Secret | None:
    if value is None:
        return None
    key = secret(value, "proxy.secret_key")
    if not key.value:
        return None
    size = len(key.value.encode("utf-8"))
    if size < MIN_SECRET_KEY_BYTES:
        raise ConfigError(
            f"is {size} bytes; the HMAC key that binds challenges needs at least "
            f"{MIN_SECRET_KEY_BYTES} random bytes: generate one with "
            '`python3 -c "import secrets; print(secrets.token_urlsafe(32))"` (the value is not '
            "shown)",
            key="proxy.secret_key",
        )
    return key


ADMIN_KEYS = ("bearer_token", "allow")


def admin(bearer_token: str | Secret, allow: Sequence[str] | None = None) -> AdminSettings:
    """The admin API's settings (`[proxy.admin]`): a bearer token of 32+ bytes and the addresses
    (CIDRs) it answers; loopback only by default."""
    token = secret(bearer_token, "proxy.admin.bearer_token")
    size = len(token.value.encode("utf-8"))
    if size < MIN_SECRET_KEY_BYTES:
        raise ConfigError(
            f"is {size} bytes; the admin bearer token needs at least {MIN_SECRET_KEY_BYTES} "
            "random bytes (the value is not shown)",
            key="proxy.admin.bearer_token",
        )
    networks = LOOPBACK if allow is None else check_networks(allow, "proxy.admin.allow")
    if not networks:
        raise ConfigError(
            "is empty: nobody could reach the admin API; list CIDRs or remove [proxy.admin]",
            key="proxy.admin.allow",
        )
    return AdminSettings(bearer_token=token, allow=tuple(networks))


def _admin(value: AdminSettings | Mapping[str, object] | None) -> AdminSettings | None:
    if value is None or isinstance(value, AdminSettings):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError("[proxy.admin] must be a table", key="proxy.admin")
    check_keys(value, ADMIN_KEYS, "[proxy.admin]", prefix="proxy.admin.")
    if "bearer_token" not in value:
        raise ConfigError("is required to serve the admin API", key="proxy.admin.bearer_token")
    token = value["bearer_token"]
    if token == "" or (isinstance(token, Secret) and not token.value):
        # Empty counts as unset (as for secret_key): `"${ADMIN_TOKEN:-}"` turns it on and off.
        return None
    allow = value.get("allow")
    return admin(value["bearer_token"], None if allow is None else allow)  # type: ignore[arg-type]


def _realm(value: str) -> str:
    check_str(value, "proxy.realm")
    # The realm goes into a quoted WWW-Authenticate parameter.
    if not value or any(c in '"\\' or ord(c) < 0x21 or ord(c) > 0x7E for c in value):
        raise ConfigError(
            "must be non-empty printable ASCII without spaces, quotes or backslashes",
            key="proxy.realm",
        )
    return value


def _unique_methods(methods: Sequence[PaymentMethod]) -> tuple[PaymentMethod, ...]:
    seen: set[str] = set()
    for method in methods:
        if not isinstance(method, PaymentMethod):
            raise ConfigError(
                f"methods must be built with tempo(), stripe(), evm() or test_money(), "
                f"not {type(method).__name__}",
                key="methods",
            )
        if method.name in seen:
            raise ConfigError(f"payment method {method.name!r} is defined twice", key="methods")
        seen.add(method.name)
    return tuple(methods)


def _unique_services(services: Sequence[Service]) -> tuple[Service, ...]:
    seen: set[str] = set()
    for service in services:
        if not isinstance(service, Service):
            raise ConfigError(
                f"services must be built with services.service() or a preset, "
                f"not {type(service).__name__}",
                key="services",
            )
        if service.id in seen:
            raise ConfigError("service id is used twice", service=service.id)
        seen.add(service.id)
    return tuple(services)


def _resolve_service(
    service: Service, methods: Mapping[str, PaymentMethod], settings: ProxySettings
) -> Service:
    routes = tuple(_resolve_route(service.id, r, methods, settings) for r in service.routes)
    priced = [methods[n] for r in routes if r.price for n in r.price.pay_with]
    caps = _resolve_caps(service.limits.spend, priced, service.id, None)
    if routes == service.routes and caps == service.limits.spend:
        return service
    return replace(service, routes=routes, limits=replace(service.limits, spend=caps))


def _resolve_caps(
    caps: tuple[SpendCap, ...],
    priced: Sequence[PaymentMethod],
    service: str,
    route: str | None,
) -> tuple[SpendCap, ...]:
    """Each cap names the currency it counts (one the route or service is priced in)."""
    out = []
    for i, cap in enumerate(caps):
        key = "max_spend" if len(caps) == 1 else f"max_spend[{i}]"
        where = "route" if route is not None else "service"
        if not priced:
            raise ConfigError(
                f"max_spend counts payments, but this {where} has no paid route",
                service=service,
                route=route,
                key=key,
            )
        currencies = {m.currency.lower(): m for m in priced}
        if cap.currency is None:
            if len(currencies) > 1:
                raise ConfigError(
                    f"this {where} is priced in several currencies "
                    f"({', '.join(m.currency for m in currencies.values())}): "
                    "say which the cap counts with currency",
                    service=service,
                    route=route,
                    key=f"{key}.currency",
                )
            method = next(iter(currencies.values()))
        else:
            wanted = cap.currency.lower()
            method_or_none = next(
                (m for m in priced if m.name.lower() == wanted), currencies.get(wanted)
            )
            if method_or_none is None:
                raise ConfigError(
                    f"a cap in currency {cap.currency!r}, but this {where} is priced in "
                    f"{', '.join(m.currency for m in currencies.values())} "
                    f"(methods {', '.join(sorted({m.name for m in priced}))})",
                    service=service,
                    route=route,
                    key=f"{key}.currency",
                )
            method = method_or_none
        try:
            spend_base_units(cap, method.decimals)
        except ConfigError as exc:
            raise ConfigError(
                exc.problem, service=service, route=route, key=f"{key}.amount"
            ) from None
        out.append(replace(cap, currency=method.currency, decimals=method.decimals))
    return tuple(out)


def _resolve_route(
    service: str, route: Route, methods: Mapping[str, PaymentMethod], settings: ProxySettings
) -> Route:
    """Fill an omitted pay_with, then check methods exist and the price fits their currencies."""
    if route.price is None:
        _resolve_caps(route.limits.spend, (), service, route.key)
        return route
    rkey = route.key
    if settings.secret_key is None:
        raise ConfigError(
            "a paid route needs proxy.secret_key (the HMAC key that binds challenges); "
            "set secret_key in [proxy] or make_config(secret_key=...)",
            key="proxy.secret_key",
            service=service,
            route=rkey,
        )
    pay_with = route.price.pay_with
    if not pay_with:
        if len(methods) != 1:
            defined = ", ".join(methods) if methods else "none defined"
            raise ConfigError(
                f"pay_with is required when there is not exactly one payment method "
                f"(methods: {defined})",
                key="pay_with",
                service=service,
                route=rkey,
            )
        pay_with = tuple(methods)
    for name in pay_with:
        method = methods.get(name)
        if method is None:
            defined = ", ".join(methods) if methods else "none"
            raise ConfigError(
                f"pay_with names payment method {name!r}, which is not defined"
                f"{closest(name, methods)}; defined: {defined}",
                key="pay_with",
                service=service,
                route=rkey,
            )
        amounts = route.price.rule.amounts if route.price.rule else (route.price.amount,)
        for amount in amounts:
            if decimal_places(amount) > method.decimals:
                raise ConfigError(
                    f"price {amount} has more decimal places than method {name!r} "
                    f"({method.currency}) allows: {method.decimals}",
                    key="price",
                    service=service,
                    route=rkey,
                )
    if pay_with != route.price.pay_with:
        route = replace(route, price=replace(route.price, pay_with=pay_with))
    caps = _resolve_caps(route.limits.spend, [methods[n] for n in pay_with], service, rkey)
    if caps != route.limits.spend:
        route = replace(route, limits=replace(route.limits, spend=caps))
    try:
        check_route_terms(route, methods)
    except ConfigError as exc:
        raise ConfigError(exc.problem, key=exc.key, service=service, route=rkey) from None
    return route


def test_methods_not_allowed(config: Config) -> tuple[str, ...]:
    """Names of test-money methods defined without `allow_test_payments`: `serve` refuses these."""
    if config.proxy.allow_test_payments:
        return ()
    return tuple(m.name for m in config.methods if isinstance(m, TestMoneyMethod))


test_methods_not_allowed.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


TEMPO_MIN_CHALLENGE_TTL = 10.0


def config_warnings(config: Config) -> tuple[str, ...]:
    """Things that load but that an operator should hear about (for the banner and `check`)."""
    warnings = [
        f"payment method {name!r} is play money; serving it needs allow_test_payments = true"
        for name in test_methods_not_allowed(config)
    ]
    used = {n for s in config.services for r in s.routes if r.price for n in r.price.pay_with}
    warnings += [
        f"payment method {m.name!r} is defined but no route offers it"
        for m in config.methods
        if m.name not in used
    ]
    # Tempo nodes refuse a transaction valid for less than ~3 s more, and pympp's client caps
    # validity at the challenge's expiry: short challenges cannot be paid on Tempo.
    if config.proxy.challenge_ttl < TEMPO_MIN_CHALLENGE_TTL and any(
        m.kind == "tempo" for m in config.methods
    ):
        warnings.append(
            f"proxy.challenge_ttl is {config.proxy.challenge_ttl:g} s: Tempo payments need at "
            f"least {TEMPO_MIN_CHALLENGE_TTL:g} s to be signed and broadcast; raise it"
        )
    return tuple(warnings)
