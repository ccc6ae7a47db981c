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


def substitute(
    text: str,
    environ: Mapping[str, str],
    path: Path = (),
    missing: list[tuple[str, Path]] | None = None,
) -> str:
    """`text` with every `${VAR}` replaced; a ConfigError naming VAR and `path` when it is unset.

    `${VAR:-default}` uses `default` when VAR is unset or empty, as in the shell. With a
    `missing` list, unset variables are recorded there (and replaced by "") instead of raising.
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
            if missing is None:
                raise error_at(f"environment variable {name} is not set", path)
            missing.append((name, path))
            return ""
        return value

    return _TOKEN.sub(replace, text)


def substitute_all(document: Any, environ: Mapping[str, str]) -> Any:
    """Every string value in a parsed document substituted; keys are left as written.

    All unset variables are named in one error, located at the first place one is used.
    """
    missing: list[tuple[str, Path]] = []
    result = _walk(document, environ, (), missing)
    if missing:
        names = list(dict.fromkeys(name for name, _ in missing))
        problem = f"environment variable {names[0]} is not set"
        if len(names) > 1:
            problem += f" (also unset: {', '.join(names[1:])})"
        raise error_at(problem, missing[0][1])
    return result


def _walk(
    value: Any, environ: Mapping[str, str], path: Path, missing: list[tuple[str, Path]]
) -> Any:
    if isinstance(value, str):
        return substitute(value, environ, path, missing)
    if isinstance(value, dict):
        return {k: _walk(v, environ, (*path, k), missing) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, environ, (*path, str(i)), missing) for i, v in enumerate(value)]
    return value
