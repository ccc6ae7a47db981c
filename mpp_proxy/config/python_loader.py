"""The proxy.py front end: run the file as a fresh module and take its `config`."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import TracebackType

from mpp_proxy.config.checks import redacted
from mpp_proxy.config.errors import ConfigError
from mpp_proxy.config.model import Config
from mpp_proxy.config.python_api import check_config, using_environ

_counter = itertools.count()


def load_python(path: Path, environ: Mapping[str, str]) -> Config:
    """Run `path` (with `env()` reading `environ`) and return its checked module-level `config`."""
    source = str(path)
    if not path.is_file():
        raise ConfigError("config file not found", file=source)
    filename = str(path.resolve())
    # A unique name per load: reloading never reuses a half-initialised module.
    name = f"_mpp_proxy_config_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, filename)
    if spec is None or spec.loader is None:
        raise ConfigError("cannot load this file as Python", file=source)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    # As `python proxy.py` would: modules next to the file (shared prices, helpers) import.
    folder = str(Path(filename).parent)
    sys.path.insert(0, folder)
    before = set(sys.modules)
    try:
        with using_environ(environ):
            spec.loader.exec_module(module)
            found = getattr(module, "config", None)
            if found is None:
                raise ConfigError(
                    "the file defines no `config`; end it with `config = Proxy(...)` "
                    "or `config = make_config(...)`",
                    file=source,
                )
            config = found if isinstance(found, Config) else getattr(found, "config", None)
            if not isinstance(config, Config):
                raise ConfigError(
                    f"`config` must be a Config or a Proxy, not {type(found).__name__}",
                    file=source,
                )
            return check_config(replace(config, source=source))
    except ConfigError as exc:
        raise exc.located(file=source, line=_line_in(exc.__traceback__, filename)) from None
    except SyntaxError as exc:
        raise ConfigError(f"Python syntax error: {exc.msg}", file=source, line=exc.lineno) from exc
    except Exception as exc:
        error = ConfigError(
            f"{type(exc).__name__} while running the file: {exc}",
            file=source,
            line=_line_in(exc.__traceback__, filename),
        )
        # The file's own exception may quote a value it read, such as an API key.
        raise redacted(error, (v for v in environ.values() if len(v) >= 8)) from None
    finally:
        sys.modules.pop(name, None)
        if folder in sys.path:
            sys.path.remove(folder)
        _forget_local_modules(set(sys.modules) - before, folder)


def _forget_local_modules(names: set[str], folder: str) -> None:
    """Drop modules the file imported from its own folder, so a reload reads them afresh."""
    for module_name in names:
        module_file = getattr(sys.modules.get(module_name), "__file__", None)
        # Only plain sibling files: a package here may be our own, imported for the first time.
        if "." not in module_name and module_file and str(Path(module_file).parent) == folder:
            sys.modules.pop(module_name, None)


def _line_in(tb: TracebackType | None, filename: str) -> int | None:
    """The deepest line of `filename` in a traceback: where the config file raised."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line
