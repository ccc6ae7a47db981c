"""The observability tables (`[proxy.metrics]`, `[proxy.log]`, `[proxy.tracing]`,
`[[proxy.webhooks]]`): raw values in, checked ObserveSettings out, for both front ends."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mpp_proxy.config.checks import (
    check_bool,
    check_keys,
    check_networks,
    check_nonempty,
    check_str,
    check_str_tuple,
    check_url,
    secret,
)
from mpp_proxy.config.errors import ConfigError
from mpp_proxy.config.model import (
    WEBHOOK_EVENTS,
    LogSettings,
    MetricsSettings,
    ObserveSettings,
    Secret,
    TracingSettings,
    Webhook,
)

METRICS_KEYS = ("enabled", "path", "allow", "bearer_token")
LOG_KEYS = ("format", "access", "log_query")
TRACING_KEYS = ("otlp_endpoint", "service_name", "headers")
WEBHOOK_KEYS = ("url", "events", "secret")
# The paths the gateway answers itself: /metrics may not shadow them.
_TAKEN = frozenset({"/healthz", "/readyz", "/openapi.json", "/llms.txt"})


def observe_settings(
    *,
    metrics: MetricsSettings | Mapping[str, Any] | None = None,
    log: LogSettings | Mapping[str, Any] | None = None,
    tracing: TracingSettings | Mapping[str, Any] | None = None,
    webhooks: Sequence[Webhook | Mapping[str, Any]] = (),
) -> ObserveSettings:
    """Settings from model values or plain tables (as TOML gives them); ConfigError on misuse."""
    return ObserveSettings(
        metrics=_metrics(metrics),
        log=_log(log),
        tracing=_tracing(tracing),
        webhooks=tuple(_webhook(i, w) for i, w in enumerate(webhooks)),
    )


def _table(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{what} must be a table", key=what)
    return value


def _given(value: object, model: type, name: str, keys: tuple[str, ...]) -> Mapping[str, Any]:
    """A table's values: from a model instance as it is, or from a raw table, keys checked."""
    if value is None:
        return {}
    if isinstance(value, model):
        return _fields(value)
    table = _table(value, f"proxy.{name}")
    check_keys(table, keys, f"[proxy.{name}]", prefix=f"proxy.{name}.")
    return table


def _metrics(value: MetricsSettings | Mapping[str, Any] | None) -> MetricsSettings:
    table = _given(value, MetricsSettings, "metrics", METRICS_KEYS)
    defaults = MetricsSettings()
    path = check_nonempty(table.get("path", defaults.path), "proxy.metrics.path")
    if not path.startswith("/") or "?" in path or "#" in path or path in _TAKEN:
        raise ConfigError(
            "must be an absolute path such as /metrics, not one of the gateway's own paths",
            key="proxy.metrics.path",
        )
    allow = check_networks(table.get("allow", defaults.allow), "proxy.metrics.allow")
    token = table.get("bearer_token")
    return MetricsSettings(
        enabled=check_bool(table.get("enabled", defaults.enabled), "proxy.metrics.enabled"),
        path=path,
        allow=allow,
        bearer_token=_optional_secret(token, "proxy.metrics.bearer_token"),
    )


def _log(value: LogSettings | Mapping[str, Any] | None) -> LogSettings:
    table = _given(value, LogSettings, "log", LOG_KEYS)
    fmt = table.get("format", "json")
    if fmt not in ("json", "text"):
        raise ConfigError('must be "json" or "text"', key="proxy.log.format")
    access = table.get("access")
    return LogSettings(
        format=fmt,
        access=None if access is None else check_bool(access, "proxy.log.access"),
        log_query=check_bool(table.get("log_query", False), "proxy.log.log_query"),
    )


def _tracing(value: TracingSettings | Mapping[str, Any] | None) -> TracingSettings:
    table = _given(value, TracingSettings, "tracing", TRACING_KEYS)
    endpoint = check_str(table.get("otlp_endpoint", ""), "proxy.tracing.otlp_endpoint")
    if endpoint:
        check_url(endpoint, "proxy.tracing.otlp_endpoint")
    headers = table.get("headers", ())
    if isinstance(headers, Mapping):
        headers = tuple(headers.items())
    pairs = tuple(
        (check_nonempty(k, "proxy.tracing.headers"), secret(v, "proxy.tracing.headers"))
        for k, v in headers
    )
    return TracingSettings(
        otlp_endpoint=endpoint,
        service_name=check_nonempty(
            table.get("service_name", "mpp-proxy"), "proxy.tracing.service_name"
        ),
        headers=pairs,
    )


def _webhook(index: int, value: Webhook | Mapping[str, Any]) -> Webhook:
    key = f"proxy.webhooks[{index}]"
    table = _fields(value) if isinstance(value, Webhook) else _table(value, key)
    check_keys(table, WEBHOOK_KEYS, f"[[proxy.webhooks]] #{index + 1}", prefix=key + ".")
    if "url" not in table or "secret" not in table:
        raise ConfigError("a webhook needs url and secret", key=key)
    events = check_str_tuple(table.get("events", WEBHOOK_EVENTS), key + ".events")
    for name in events:
        if name not in WEBHOOK_EVENTS:
            raise ConfigError(
                f"unknown event {name!r}; one of {', '.join(WEBHOOK_EVENTS)}", key=key + ".events"
            )
    signing = secret(table["secret"], key + ".secret")
    if len(signing.value) < 16:
        raise ConfigError("the signing secret must be at least 16 characters", key=key + ".secret")
    return Webhook(url=check_url(table["url"], key + ".url"), secret=signing, events=events)


def _optional_secret(value: object, key: str) -> Secret | None:
    if value is None:
        return None
    found = secret(value, key)
    return found if found.value else None


def _fields(value: object) -> dict[str, Any]:
    slots: tuple[str, ...] = type(value).__slots__  # type: ignore[attr-defined]
    return {name: getattr(value, name) for name in slots}
