"""Upstream auth: the builders (bearer, header, basic) and the exact headers each one injects."""

from __future__ import annotations

import base64

from mpp_proxy.config.checks import check_header_name, check_header_value, secret
from mpp_proxy.config.errors import ConfigError
from mpp_proxy.config.model import Auth, BasicAuth, BearerAuth, HeaderAuth, Secret


def bearer(token: str | Secret) -> BearerAuth:
    """`Authorization: Bearer <token>`."""
    return BearerAuth(check_header_value(secret(token, "auth.bearer"), "auth.bearer"))


# Headers that frame or route the message, or carry payment state: never an upstream credential.
_NOT_AUTH = frozenset(
    {
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "expect",
        "payment-receipt",
        "www-authenticate",
    }
)


def header(name: str, value: str | Secret) -> HeaderAuth:
    """A custom header carrying the key, such as `header("X-Api-Key", key)`; name is lower-cased."""
    lower = check_header_name(name, "auth.header")
    if lower in _NOT_AUTH or lower.startswith("payment-"):
        raise ConfigError(f"{name!r} cannot carry an upstream credential", key="auth.header")
    return HeaderAuth(lower, check_header_value(secret(value, "auth.value"), "auth.value"))


def basic(user: str | Secret, password: str | Secret = "") -> BasicAuth:
    """HTTP Basic. `basic(key)` sends the key as the user with an empty password.

    A user-id cannot contain ':' (RFC 7617), so `basic("user:pass")` is read as user and password,
    the same as `basic("user", "pass")`.
    """
    user_secret = secret(user, "auth.basic")
    password_secret = secret(password, "auth.password")
    if ":" in user_secret.value:
        if password_secret.value:
            raise ConfigError(
                "a Basic user cannot contain ':' when a password is also given "
                "(the value is not shown)",
                key="auth.basic",
            )
        name, _, rest = user_secret.value.partition(":")
        user_secret, password_secret = Secret(name), Secret(rest)
    if not user_secret.value:
        raise ConfigError("the Basic user is empty", key="auth.basic")
    for part in (user_secret, password_secret):
        text = part.value
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
            raise ConfigError(
                "contains control characters (the value is not shown)", key="auth.basic"
            )
    return BasicAuth(user_secret, password_secret)


def auth_headers(auth: Auth | None) -> tuple[tuple[bytes, bytes], ...]:
    """The header(s) to inject upstream, lower-case names; computed once per service."""
    if auth is None:
        return ()
    if isinstance(auth, BearerAuth):
        return ((b"authorization", b"Bearer " + auth.token.value.encode("latin-1")),)
    if isinstance(auth, HeaderAuth):
        return ((auth.header.lower().encode("ascii"), auth.value.value.encode("latin-1")),)
    credentials = f"{auth.username.value}:{auth.password.value}".encode()
    return ((b"authorization", b"Basic " + base64.b64encode(credentials)),)
