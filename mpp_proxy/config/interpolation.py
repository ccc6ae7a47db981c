"""`${VAR}` / `${VAR:-default}` substitution in the string values of a parsed TOML document."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from mpp_proxy.config.errors import ConfigError

# `$${` is a literal `${`; any other `$` is literal too, so passwords containing `$` need no escape.
_TOKEN = re.compile(r"\$\$\{|\$\{(?P<body>[^}]*)\}|\$\{")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

Path = tuple[str, ...]


def error_at(problem: str, path: Path) -> ConfigError:
    """A ConfigError located at the value `path` points to in the document."""
    if len(path) >= 2 and path[0] == "services":
        if len(path) >= 4 and path[2] == "routes":
            return ConfigError(
                problem, service=path[1], route=path[3], key=".".join(path[4:]) or None
            )
        return ConfigError(problem, service=path[1], key=".".join(path[2:]) or None)
    return ConfigError(problem, key=".".join(path) or None)


def substitute(text: str, environ: Mapping[str, str], path: Path = ()) -> str:
    """`text` with every `${VAR}` replaced; a ConfigError naming VAR and `path` when it is unset.

    `${VAR:-default}` uses `default` when VAR is unset or empty, as in the shell.
    """

    def replace(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "$${":
            return "${"
        body = match.group("body")
        if body is None:
            raise error_at("unterminated ${ in a value; write $${ for a literal ${", path)
        name, sep, default = body.partition(":-")
        if not _NAME.fullmatch(name):
            raise error_at(
                f"${{{name}}} is not a valid variable reference; use ${{NAME}} or "
                "${NAME:-default} (write $${ for a literal ${)",
                path,
            )
        value = environ.get(name)
        if value is None or (sep and not value):
            if sep:
                return default
            raise error_at(f"environment variable {name} is not set", path)
        return value

    return _TOKEN.sub(replace, text)


def substitute_all(value: Any, environ: Mapping[str, str], path: Path = ()) -> Any:
    """Every string value in a parsed document substituted; keys are left as written."""
    if isinstance(value, str):
        return substitute(value, environ, path)
    if isinstance(value, dict):
        return {k: substitute_all(v, environ, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_all(v, environ, (*path, str(i))) for i, v in enumerate(value)]
    return value
