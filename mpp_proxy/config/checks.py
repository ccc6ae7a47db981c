"""Value checks shared by both front ends: one raw value in, a model value or ConfigError out."""

from __future__ import annotations

import dataclasses
import difflib
import ipaddress
import re
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from mpp_proxy.config.errors import ConfigError
from mpp_proxy.config.model import ANY_METHOD, HTTP_METHODS, RESERVED_SERVICE_IDS, Secret

# One URL path segment that needs no escaping anywhere (paths, discovery, logs).
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")
_PLAIN_DECIMAL = re.compile(r"[0-9]+(\.[0-9]+)?")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_PRIVATE_KEY = re.compile(r"(0x)?[0-9a-fA-F]{64}")
# RFC 9110 token: what a header field name may be.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def closest(word: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` when a choice is close to `word`, else ``."""
    match = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def check_keys(
    given: Iterable[str],
    allowed: Iterable[str],
    what: str,
    *,
    service: str | None = None,
    route: str | None = None,
    prefix: str = "",
) -> None:
    """Reject the first key not in `allowed`, suggesting the closest valid one."""
    valid = list(allowed)
    for key in given:
        if key not in valid:
            raise ConfigError(
                f"unknown key {key!r} in {what}{closest(key, valid)}; "
                f"valid keys: {', '.join(valid)}",
                service=service,
                route=route,
                key=prefix + key,
            )


def check_segment(value: str, what: str, *, service: str | None = None) -> str:
    """A name that becomes one URL path segment: service ids and method names."""
    if not isinstance(value, str) or not _SEGMENT.fullmatch(value) or value in (".", ".."):
        raise ConfigError(
            f"{what} {value!r} must be one URL-safe path segment: letters, digits, '.', '_', '-' "
            "(and not '.' or '..')",
            service=service,
        )
    return value


def check_service_id(service_id: str) -> str:
    """A service id: one safe path segment that is not one of the proxy's own paths."""
    named = service_id if isinstance(service_id, str) else None
    check_segment(service_id, "service id", service=named)
    if service_id.lower() in RESERVED_SERVICE_IDS:
        raise ConfigError(
            f"service id {service_id!r} collides with the reserved path /{service_id.lower()}; "
            f"reserved: {', '.join(sorted(RESERVED_SERVICE_IDS))}",
            service=service_id,
        )
    return service_id


def redact_url(url: str) -> str:
    """The URL without any user:password part, safe to put in a message."""
    if "@" not in url:
        return url
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "<url with credentials>"
    host = rest.split("/", 1)[0].rpartition("@")[2]
    tail = rest[len(rest.split("/", 1)[0]) :]
    return f"{scheme}://***@{host}{tail}"


def url_origin(url: str) -> str:
    """The URL up to its host, for messages: RPC and facilitator URLs often hold a key in their
    path or query, so anything after the host is shown as `/...`."""
    scheme, sep, rest = redact_url(url).partition("://")
    if not sep:
        scheme, rest = "", scheme
    ends = [i for i in (rest.find(c) for c in "/?#") if i >= 0]
    host_end = min(ends, default=len(rest))
    return scheme + sep + rest[:host_end] + ("/..." if host_end < len(rest) else "")


def check_url(value: object, key: str, *, service: str | None = None) -> str:
    """An absolute http(s) URL with a host and no credentials, query or fragment."""
    if not isinstance(value, str):
        raise ConfigError(
            f"must be a URL string, not {type(value).__name__}", service=service, key=key
        )
    shown = url_origin(value)

    def bad(reason: str) -> ConfigError:
        return ConfigError(f"invalid URL {shown!r}: {reason}", service=service, key=key)

    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise bad("contains whitespace or control characters")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise bad(str(exc) if "@" not in value else "malformed") from None
    if parts.scheme not in ("http", "https"):
        raise bad("the scheme must be http:// or https://")
    if not parts.hostname:
        raise bad("no host")
    if parts.username is not None or parts.password is not None:
        raise bad("credentials do not belong in the URL; use `auth`")
    if parts.query or value.endswith("?"):
        raise bad("no query string allowed")
    if parts.fragment or "#" in value:
        raise bad("no fragment allowed")
    if port == 0:
        raise bad("port 0")
    return value


def parse_price(value: object, *, service: str | None = None, route: str | None = None) -> Decimal:
    """A price as written ("0.05", 1, Decimal) to an exact, positive Decimal."""
    if isinstance(value, bool | float):
        raise ConfigError(
            'write the price as a string such as "0.05"; floats are inexact',
            service=service,
            route=route,
            key="price",
        )
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, Decimal):
        amount = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            amount = Decimal(text)
        except InvalidOperation:
            raise ConfigError(
                f"price {value!r} is not a decimal number",
                service=service,
                route=route,
                key="price",
            ) from None
    else:
        raise ConfigError(
            f"price must be a decimal string, not {type(value).__name__}",
            service=service,
            route=route,
            key="price",
        )
    if not amount.is_finite():
        raise ConfigError(
            f"price {value!r} must be a finite number", service=service, route=route, key="price"
        )
    if amount < 0:
        raise ConfigError(f"price {value!r} is negative", service=service, route=route, key="price")
    if amount == 0:
        raise ConfigError(
            'a price of 0 is not a charge; write the route as "free"',
            service=service,
            route=route,
            key="price",
        )
    if isinstance(value, str) and not _PLAIN_DECIMAL.fullmatch(value.strip()):
        raise ConfigError(
            f'price {value!r} must be written as a plain decimal such as "0.05"',
            service=service,
            route=route,
            key="price",
        )
    return amount


def base_units(amount: Decimal, decimals: int) -> int:
    """`amount` in the currency's smallest unit, exactly: ("0.05", 6) -> 50000.

    Integer arithmetic on the decimal digits, so no context precision can round a large amount.
    Raises ValueError when the amount has more places than the currency (the config loader
    rejects such prices, so this only guards configs built by hand).
    """
    if not amount.is_finite() or amount < 0:
        raise ValueError(f"price {amount} is not a finite, non-negative amount")
    _, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int)  # finite
    coefficient = int("".join(map(str, digits)) or "0")
    shift = exponent + decimals
    if shift >= 0:
        return coefficient * int(10**shift)
    whole, rest = divmod(coefficient, int(10**-shift))
    if rest:
        raise ValueError(f"price {amount} has more than {decimals} decimal places")
    return whole


def decimal_places(amount: Decimal) -> int:
    """Significant places after the point: 0.050 has 2, 100 has 0."""
    exponent = amount.normalize().as_tuple().exponent
    assert isinstance(exponent, int)  # finite by construction
    return max(0, -exponent)


def parse_route_key(key: object, *, service: str | None = None) -> tuple[str, str]:
    """`"POST /v1/x"`, `"/v1/x"` or `"* /v1/x"` to (method, pattern)."""
    if not isinstance(key, str):
        raise ConfigError('route keys must be strings like "POST /v1/x"', service=service)
    parts = key.split()
    if len(parts) == 1:
        method, pattern = ANY_METHOD, parts[0]
    elif len(parts) == 2:
        method, pattern = parts[0].upper(), parts[1]
    else:
        raise ConfigError(
            'a route key is "METHOD /path", "* /path" or "/path"', service=service, route=key
        )
    if method != ANY_METHOD and method not in HTTP_METHODS:
        raise ConfigError(
            f"unknown HTTP method {parts[0]!r}{closest(method, HTTP_METHODS)}; use one of "
            f"{', '.join(sorted(HTTP_METHODS))} or '*' for any",
            service=service,
            route=key,
        )
    if not pattern.startswith("/"):
        raise ConfigError(
            f"the route path {pattern!r} must start with '/'", service=service, route=key
        )
    if "?" in pattern or "#" in pattern:
        raise ConfigError(
            "a route path matches the path only; the query string is passed through as is",
            service=service,
            route=key,
        )
    return method, pattern


def check_header_name(value: object, key: str, *, service: str | None = None) -> str:
    """A header field name, lower-cased as it goes on the wire in HTTP/1.1 and h2."""
    if not isinstance(value, str) or not _TOKEN.fullmatch(value):
        raise ConfigError(f"{value!r} is not a valid HTTP header name", service=service, key=key)
    return value.lower()


def check_header_value(secret: Secret, key: str, *, service: str | None = None) -> Secret:
    """A secret that goes into a header: printable, latin-1, no CR/LF (header injection)."""
    text = secret.value
    if not text:
        raise ConfigError("is empty", service=service, key=key)
    if text != text.strip() or any(ord(c) < 0x20 or ord(c) == 0x7F or ord(c) > 0xFF for c in text):
        raise ConfigError(
            "contains whitespace at its ends, control characters or non-latin-1 characters "
            "(the value is not shown)",
            service=service,
            key=key,
        )
    return secret


def secret(value: object, key: str, *, service: str | None = None) -> Secret:
    if isinstance(value, Secret):
        return value
    if not isinstance(value, str):
        raise ConfigError(f"must be a string, not {type(value).__name__}", service=service, key=key)
    return Secret(value)


def check_address(value: object, key: str) -> str:
    if not isinstance(value, str) or not _ADDRESS.fullmatch(value):
        raise ConfigError("must be a 0x-prefixed 20-byte hex address", key=key)
    return value


def check_private_key(value: Secret, key: str) -> Secret:
    if not _PRIVATE_KEY.fullmatch(value.value):
        raise ConfigError("must be a 32-byte hex private key (the value is not shown)", key=key)
    return value


def check_int(
    value: object,
    key: str,
    *,
    low: int | None = None,
    high: int | None = None,
    service: str | None = None,
    route: str | None = None,
    what: str = "",
) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(
            f"{what}must be an integer, not {type(value).__name__}",
            service=service,
            route=route,
            key=key,
        )
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ConfigError(
            f"{what}must be {bounds}, not {value}", service=service, route=route, key=key
        )
    return value


# Ten years: any longer duration added to now no longer fits a date (expiry stamps overflow).
MAX_SECONDS = 10 * 365 * 86400


def check_number(value: object, key: str, *, service: str | None = None, what: str = "") -> float:
    """A positive number of seconds, at most MAX_SECONDS."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(
            f"{what}must be a number, not {type(value).__name__}", service=service, key=key
        )
    number = float(value)
    if not number > 0:
        raise ConfigError(f"{what}must be a positive number", service=service, key=key)
    if not number <= MAX_SECONDS:
        raise ConfigError(
            f"{what}must be at most {MAX_SECONDS} seconds (ten years), not {value}",
            service=service,
            key=key,
        )
    return number


def check_str(
    value: object, key: str, *, service: str | None = None, route: str | None = None, what: str = ""
) -> str:
    if not isinstance(value, str):
        raise ConfigError(
            f"{what}must be a string, not {type(value).__name__}",
            service=service,
            route=route,
            key=key,
        )
    return value


def check_nonempty(value: object, key: str) -> str:
    """A string with at least one character."""
    text = check_str(value, key)
    if not text:
        raise ConfigError("is empty", key=key)
    return text


def check_bool(value: object, key: str, *, service: str | None = None, what: str = "") -> bool:
    if not isinstance(value, bool):
        raise ConfigError(
            f"{what}must be true or false, not {type(value).__name__}", service=service, key=key
        )
    return value


def check_str_tuple(
    value: object, key: str, *, service: str | None = None, what: str = ""
) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigError(f"{what}must be a list of strings", service=service, key=key)
    items: tuple[Any, ...] = tuple(value)
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"{what}must be a list of strings", service=service, key=key)
    return items


def check_networks(value: object, key: str) -> tuple[str, ...]:
    """A list of client addresses or CIDR networks (`allow` of the admin API and /metrics)."""
    networks = check_str_tuple(value, key)
    for cidr in networks:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            raise ConfigError(
                f"{cidr!r} is not an address or network (CIDR) such as 10.0.0.0/8", key=key
            ) from None
    return networks


# Keys whose values are secrets wherever they appear in a TOML document.
SECRET_KEYS = frozenset(
    {"secret_key", "api_key", "bearer", "value", "basic", "password", "fee_payer_key"}
    | {"bearer_token", "secret"}
)


_MIN_REDACTED = 6


def secret_values(document: object, key: str = "") -> set[str]:
    """Every string written under a secret key of a parsed (and substituted) document."""
    if isinstance(document, dict):
        found: set[str] = set()
        for k, v in document.items():
            found |= secret_values(v, k)
        return found
    if isinstance(document, list):
        return {s for item in document for s in secret_values(item, key)}
    if isinstance(document, str) and key in SECRET_KEYS and document:
        return {document}
    return set()


def secrets_in(*values: object) -> set[str]:
    """The plain text of every Secret inside model values (dataclasses, tuples, lists)."""
    found: set[str] = set()
    stack = list(values)
    while stack:
        value = stack.pop()
        if isinstance(value, Secret):
            found.add(value.value)
        elif isinstance(value, tuple | list):
            stack.extend(value)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            stack.extend(getattr(value, f.name) for f in dataclasses.fields(value))
    return found


def redacted(exc: ConfigError, secrets: Iterable[str]) -> ConfigError:
    """`exc` with any secret value that slipped into its problem text replaced by ***."""
    problem = exc.problem
    # Longest first so a secret that contains another is hidden whole. Values this short are
    # not secrets anyone relies on, and hiding them would garble ordinary words.
    for value in sorted(secrets, key=len, reverse=True):
        if len(value) >= _MIN_REDACTED:
            problem = problem.replace(value, "***")
    if problem == exc.problem:
        return exc
    return ConfigError(
        problem,
        file=exc.file,
        service=exc.service,
        route=exc.route,
        key=exc.key,
        line=exc.line,
        other_route=exc.other_route,
        other_line=exc.other_line,
    )
