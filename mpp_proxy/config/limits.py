"""Limit settings as written (rates, spend caps, capacity, trusted proxies) to model values.

Both front ends go through here: a proxy.toml table and a proxy.py call give the same values
and the same errors, each naming the key at fault (`limits[0].rate`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from mpp_proxy.config.checks import (
    base_units,
    check_bool,
    check_header_name,
    check_int,
    check_str,
    closest,
    parse_price,
)
from mpp_proxy.config.errors import ConfigError
from mpp_proxy.config.model import (
    FORWARDED_HEADERS,
    HEADER_KEY,
    LIMIT_KEYS,
    SPEND_WINDOWS,
    STORE_ERROR_MODES,
    Capacity,
    Limits,
    RateLimit,
    SpendCap,
)

__all__ = [
    "LIMIT_OPTIONS",
    "capacity_of",
    "forwarded_header",
    "limits_of",
    "parse_duration",
    "parse_rate",
    "policy_names",
    "rate_limit",
    "spend_cap",
    "trusted_networks",
]

# The route and service keys that hold limits, and the service keys that hold its capacity.
LIMIT_OPTIONS = ("limits", "max_spend", "on_store_error", "limit_headers")
CAPACITY_OPTIONS = ("max_in_flight", "queue", "queue_timeout", "shed_above")
RATE_KEYS = ("rate", "burst", "key", "name")
SPEND_KEYS = ("amount", "per", "key", "currency")

_UNITS = {
    "ms": 0.001,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
}
_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)?\s*([a-z]+)\s*")
_RATE = re.compile(r"\s*([0-9]+)\s*/\s*(.+?)\s*")
_NAME = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# Spend counters are exact integers everywhere, Redis's Lua (doubles) included.
_MAX_COUNTER = 2**53
_YEAR = 366 * 86400.0


def parse_duration(value: object, key: str, *, what: str = "a duration") -> float:
    """ "2s", "500ms", "1.5 minutes", or a number of seconds, to positive seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f'{what} is written like "2s", "500ms" or "1m"', key=key)
    if isinstance(value, str):
        match = _DURATION.fullmatch(value.lower())
        unit = _UNITS.get(match.group(2)) if match else None
        if match is None or unit is None:
            raise ConfigError(
                f'{what} {value!r} is not a duration such as "2s", "500ms" or "1m"', key=key
            )
        seconds = float(match.group(1) or 1) * unit
    else:
        seconds = float(value)
    if not 0 < seconds <= _YEAR:
        raise ConfigError(f"{what} must be more than 0 and at most a year, not {value!r}", key=key)
    return seconds


def parse_rate(value: object, key: str) -> tuple[int, float]:
    """ "60/minute", "10/s", "1000/1h", "100/10s" to (count, period in seconds)."""
    text = value if isinstance(value, str) else None
    match = _RATE.fullmatch(text) if text is not None else None
    if match is None:
        raise ConfigError(
            f'rate {value!r} is not a rate such as "60/minute", "10/second" or "1000/1h"', key=key
        )
    count = int(match.group(1))
    if count < 1:
        raise ConfigError(f"rate {value!r} allows no request at all", key=key)
    period = parse_duration(match.group(2), key, what="the rate's period")
    return count, period


def limit_key(value: object, key: str) -> str:
    """ "ip", "payer", "route" or "header:NAME" (the name lower-cased)."""
    if not isinstance(value, str):
        raise ConfigError(f"must be a string, not {type(value).__name__}", key=key)
    if value.lower().startswith(HEADER_KEY):
        name = value[len(HEADER_KEY) :].strip()
        return HEADER_KEY + check_header_name(name, key)
    if value in LIMIT_KEYS:
        return value
    kinds = (*LIMIT_KEYS, "header:NAME")
    raise ConfigError(
        f"unknown limit key {value!r}{closest(value, kinds)}; one of {', '.join(kinds)}", key=key
    )


def rate_limit(
    rate: str, *, burst: int | None = None, key: str = "ip", name: str = ""
) -> RateLimit:
    """A rate limit: `rate` ("60/minute"), at most `burst` at once (default: the whole count),
    counted per `key` ("ip", "payer", "route" or "header:NAME")."""
    count, period = parse_rate(rate, "rate")
    size = count if burst is None else check_int(burst, "burst", low=1, high=10**9)
    if name and (not isinstance(name, str) or not _NAME.fullmatch(name)):
        raise ConfigError(
            f"name {name!r} must be 1-64 letters, digits or '._:-' (it goes into a header)",
            key="name",
        )
    return RateLimit(count, period, size, limit_key(key, "key"), name, rate.strip())


def spend_cap(
    amount: str | int | Decimal,
    *,
    per: str = "day",
    key: str = "payer",
    currency: str | None = None,
) -> SpendCap:
    """At most `amount` of delivered payments per `per` window (minute, hour, day, week, month,
    UTC), counted per `key`; `currency` (a method's currency or name) when the route has two."""
    try:
        value = parse_price(amount)
    except ConfigError as exc:
        raise ConfigError(exc.problem.replace("price", "amount"), key="amount") from None
    if per not in SPEND_WINDOWS:
        raise ConfigError(
            f"unknown window {per!r}{closest(str(per), SPEND_WINDOWS)}; "
            f"one of {', '.join(SPEND_WINDOWS)}",
            key="per",
        )
    if currency is not None:
        check_str(currency, "currency")
    return SpendCap(value, per, limit_key(key, "key"), currency)


def _table(value: object, key: str, keys: Sequence[str]) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"must be a table with {', '.join(keys)}", key=key)
    for name in value:
        if name not in keys:
            raise ConfigError(
                f"unknown key {name!r}{closest(str(name), keys)}; valid keys: {', '.join(keys)}",
                key=f"{key}.{name}",
            )
    return value


def _entry(value: object, key: str, keys: Sequence[str], builder: Any, hint: str) -> Any:
    """One limit or cap from its table (keys checked, the first one required, errors located
    at `key`); a value already built passes through."""
    if isinstance(value, RateLimit | SpendCap):
        return value
    table = _table(value, key, keys)
    if keys[0] not in table:
        raise ConfigError(f"needs {keys[0]}, such as {hint}", key=f"{key}.{keys[0]}")
    try:
        return builder(**table)
    except ConfigError as exc:
        raise ConfigError(exc.problem, key=f"{key}.{exc.key}") from None


def _one_rate(value: object, key: str) -> RateLimit:
    limit: RateLimit = _entry(value, key, RATE_KEYS, rate_limit, 'rate = "60/minute"')
    return limit


def _one_cap(value: object, key: str) -> SpendCap:
    cap: SpendCap = _entry(value, key, SPEND_KEYS, spend_cap, 'amount = "5.00"')
    return cap


def _rates(value: object) -> tuple[RateLimit, ...]:
    if value is None:
        return ()
    if isinstance(value, RateLimit | Mapping):
        value = [value]
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(
            'limits is a list such as [{ rate = "60/minute", key = "ip" }]', key="limits"
        )
    rates = tuple(_one_rate(v, f"limits[{i}]") for i, v in enumerate(value))
    named = [r.name for r in rates if r.name]
    for name in named:
        if named.count(name) > 1:
            raise ConfigError(f"two limits are named {name!r}", key="limits")
    return rates


def _caps(value: object) -> tuple[SpendCap, ...]:
    if value is None:
        return ()
    if isinstance(value, SpendCap | Mapping):
        return (_one_cap(value, "max_spend"),)
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigError(
            'max_spend is a table such as { amount = "5.00", per = "day" }', key="max_spend"
        )
    return tuple(_one_cap(v, f"max_spend[{i}]") for i, v in enumerate(value))


def limits_of(
    limits: object = None,
    max_spend: object = None,
    on_store_error: object = None,
    limit_headers: object = None,
) -> Limits:
    """The Limits of a route or a service from the keys of LIMIT_OPTIONS."""
    if on_store_error is not None and on_store_error not in STORE_ERROR_MODES:
        raise ConfigError(
            f"on_store_error is {' or '.join(map(repr, STORE_ERROR_MODES))}, "
            f"not {on_store_error!r}",
            key="on_store_error",
        )
    headers = None if limit_headers is None else check_bool(limit_headers, "limit_headers")
    return Limits(_rates(limits), _caps(max_spend), on_store_error, headers)


def capacity_of(
    max_in_flight: object = None,
    queue: object = 0,
    queue_timeout: object = 2.0,
    shed_above: object = None,
) -> Capacity:
    """A service's Capacity from the keys of CAPACITY_OPTIONS."""
    cap = None if max_in_flight is None else check_int(max_in_flight, "max_in_flight", low=1)
    waiting = check_int(queue, "queue", low=0)
    if waiting and cap is None:
        raise ConfigError("a queue needs max_in_flight (the queue is beyond it)", key="queue")
    timeout = parse_duration(queue_timeout, "queue_timeout")
    shed = None if shed_above is None else parse_duration(shed_above, "shed_above")
    return Capacity(cap, waiting, timeout, shed)


def trusted_networks(values: object) -> tuple[str, ...]:
    """CIDRs ("10.0.0.0/8") or addresses, each checked and written normalised."""
    key = "proxy.trusted_proxies"
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise ConfigError('must be a list such as ["10.0.0.0/8", "127.0.0.1"]', key=key)
    out: list[str] = []
    for value in values:
        if not isinstance(value, str):
            raise ConfigError("must be a list of strings (CIDRs or addresses)", key=key)
        try:
            network = ipaddress.ip_network(value.strip(), strict=True)
        except ValueError as exc:
            reason = "host bits are set" if "host bits" in str(exc) else "not a CIDR or address"
            raise ConfigError(f"{value!r} does not parse as a network: {reason}", key=key) from None
        if str(network) not in out:
            out.append(str(network))
    return tuple(out)


def forwarded_header(value: object) -> str:
    if not isinstance(value, str) or value.lower() not in FORWARDED_HEADERS:
        raise ConfigError(
            f"forwarded_header is {' or '.join(map(repr, FORWARDED_HEADERS))}, not {value!r}",
            key="proxy.forwarded_header",
        )
    return value.lower()


def spend_base_units(cap: SpendCap, decimals: int) -> int:
    """The cap in its currency's base units; ConfigError when it does not fit the currency."""
    try:
        units = base_units(cap.amount, decimals)
    except ValueError:
        raise ConfigError(
            f"amount {cap.amount} has more decimal places than its currency allows ({decimals})",
            key="max_spend.amount",
        ) from None
    if units >= _MAX_COUNTER:
        raise ConfigError(f"amount {cap.amount} is too large to count", key="max_spend.amount")
    return units


def policy_names(limits: Sequence[tuple[RateLimit, str]]) -> list[str]:
    """The policy name clients see (RateLimit fields, discovery) for each of a route's limits
    (level "route" or "service"): its own, else its key ("payer", "service.ip"), unique."""
    names: list[str] = []
    for limit, level in limits:
        base = limit.name or (limit.key if level == "route" else f"service.{limit.key}")
        name, n = base, 1
        while name in names:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names
