"""`serve` and `check`: load and vet a config, preflight the listener and store, run granian."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import socket
import sys
from pathlib import Path

from mpp_proxy.cli.banner import Listener, render_banner
from mpp_proxy.cli.failure import EXIT_CONFIG, Failure
from mpp_proxy.cli.redact import public_url
from mpp_proxy.cli.server import DEFAULT_SHUTDOWN, Shutdown, load_tls, run_granian
from mpp_proxy.config.errors import ConfigError
from mpp_proxy.config.model import Config, TestMoneyMethod

STORE_TIMEOUT = 5.0
# Set for the workers of `mpp-proxy serve`: the process a reload signals, and the worker count.
SERVE_PID_ENV = "MPP_PROXY_SERVE_PID"
WORKERS_ENV = "MPP_PROXY_WORKERS"
# The loaders' wording for an unset ${VAR}; used only to print the matching fix.
_MISSING_ENV = re.compile(r"environment variable (\w+) is not set")


def load(path: str) -> Config:
    """The config at `path`, or a Failure naming what is wrong (exit 2)."""
    file = Path(path)
    if not file.exists():
        fix = "pass --config with the path of a proxy.toml or proxy.py (see examples/)"
        if file.is_absolute():
            fix += f"; in a container, mount it there: -v ./proxy.toml:{path}"
        raise Failure(f"config file not found: {path}", fix, exit_code=EXIT_CONFIG)
    if file.is_dir():
        inside = sorted(p.name for p in file.iterdir() if p.suffix in (".toml", ".py"))
        named = f"{file / inside[0]}" if inside else f"{file / 'proxy.toml'}"
        raise Failure(
            f"config path is a directory: {path}"
            + (f" (it holds {', '.join(inside[:5])})" if inside else ""),
            f"pass the file itself, e.g. --config {named}",
            exit_code=EXIT_CONFIG,
        )
    if not file.is_file():
        raise Failure(f"config path is not a file: {path}", exit_code=EXIT_CONFIG)
    if file.suffix not in (".toml", ".py"):
        raise Failure(
            f"config file must end in .toml or .py: {path}",
            "rename it or point --config at a proxy.toml / proxy.py",
            exit_code=EXIT_CONFIG,
        )
    from mpp_proxy.config import load_config

    try:
        config: Config = load_config(str(file))
    except ConfigError as error:
        missing = _MISSING_ENV.search(error.problem)
        if missing:
            fix = f"export {missing.group(1)}=... (or set it in your service manager) and retry"
        else:
            fix = f"fix it, then check with `mpp-proxy check --config {path}`"
        raise Failure(f"invalid config: {error.message}", fix, exit_code=EXIT_CONFIG) from error
    return config


def compile_app(config: Config, path: str) -> None:
    """Build the ASGI app once (router trie, discovery; no I/O): ambiguous routes fail here."""
    from mpp_proxy.core import Proxy

    try:
        Proxy(config)
    except ConfigError as error:
        from mpp_proxy.config.toml_loader import locate

        raise Failure(
            f"invalid config: {locate(error, path).message}",
            f"fix it, then check with `mpp-proxy check --config {path}`",
            exit_code=EXIT_CONFIG,
        ) from error


def vet(config: Config, path: str, workers: int) -> None:
    """Refuse configs that would run but be unsafe or useless: no services, free test money,
    unshared replay state."""
    if not config.services:
        raise Failure(
            f"{path} defines no services: the gateway would answer 404 to every request",
            "add a [services.NAME] table with base_url and routes (examples/local-api.toml "
            "is a small one)",
            exit_code=EXIT_CONFIG,
        )
    test_methods = [m.name for m in config.methods if isinstance(m, TestMoneyMethod)]
    if test_methods and not config.proxy.allow_test_payments:
        raise Failure(
            f"{path}: test-money method(s) {', '.join(test_methods)} would let anyone call paid "
            "routes for free",
            "remove them, or set `allow_test_payments = true` under [proxy] for a demo",
            exit_code=EXIT_CONFIG,
        )
    if workers > 1 and config.proxy.state.startswith("memory:"):
        raise Failure(
            f"memory:// state with --workers {workers}: replay protection would not be shared "
            "between workers (a credential could be redeemed once per worker)",
            'use state = "sqlite:///path/state.db" (or redis://) under [proxy], or --workers 1',
            exit_code=EXIT_CONFIG,
        )


def check_port(host: str, port: int) -> int:
    """Bind and release the listener first, so a busy port is one clear line, not a crash.

    Returns the port bound: the one asked for, or the one the system chose for port 0 (granian
    then binds that number; another process could take it in between, which is fine for the
    tests and local runs port 0 is for)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise Failure(
            f"cannot resolve listen address {host!r}: {exc.strerror}",
            "pass --host with a local address such as 127.0.0.1 or 0.0.0.0",
            exit_code=EXIT_CONFIG,
        ) from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # Same option granian sets: a socket in TIME_WAIT is not "in use", a listener is.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise Failure(
                f"port {port} on {host} is already in use (another mpp-proxy or server?)",
                "stop it or pass --port with a free port",
            ) from exc
        if exc.errno == errno.EACCES:
            raise Failure(
                f"permission denied binding port {port} on {host}",
                "use a port above 1023 or run with the needed privileges",
            ) from exc
        if exc.errno == errno.EADDRNOTAVAIL:
            raise Failure(
                f"{host} is not an address of this machine",
                "pass --host 127.0.0.1 or 0.0.0.0",
                exit_code=EXIT_CONFIG,
            ) from exc
        raise Failure(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    else:
        bound: int = sock.getsockname()[1]
        return bound
    finally:
        sock.close()


async def _ping_store(url: str) -> None:
    from mpp_proxy.state import open_store

    store = open_store(url)
    try:
        await store.open()
        if not await store.ping():
            raise ConnectionError("it did not answer a ping")
    finally:
        # Closing a store that never opened may fail; the cause is what we report.
        with contextlib.suppress(Exception):
            await store.close()


def check_store(config: Config, path: str) -> None:
    """Open and ping the state store, so a dead Redis fails here and not on the first payment."""
    url = config.proxy.state
    shown = public_url(url)
    file = _sqlite_file(url)
    if file is not None:
        shown += f" (file {file})"
        fix = (
            f"make sure {file.parent} exists and is writable by this user (uid {os.getuid()}), "
            f"or change `state` under [proxy] in {path} (sqlite:////absolute/path.db)"
        )
    else:
        fix = f"start it, or change `state` under [proxy] in {path}"
    try:
        asyncio.run(asyncio.wait_for(_ping_store(url), STORE_TIMEOUT))
    except (ConfigError, ValueError) as error:
        problem = error.problem if isinstance(error, ConfigError) else str(error)
        raise Failure(
            f"invalid state URL {shown}: {problem}",
            f"fix `state` under [proxy] in {path}",
            exit_code=EXIT_CONFIG,
        ) from error
    except TimeoutError as exc:
        raise Failure(f"state store {shown} did not answer within {STORE_TIMEOUT:g}s", fix) from exc
    except ConnectionError as exc:
        raise Failure(f"state store {shown} is unreachable ({exc})", fix) from exc
    except Exception as exc:
        # Redis and SQLite raise their own exception types; name the type, not a secret URL.
        raise Failure(
            f"state store {shown} cannot be opened ({type(exc).__name__}: {_safe(exc, url)})", fix
        ) from exc


def _sqlite_file(url: str) -> Path | None:
    """The absolute path of a sqlite state URL's file (relative URLs are to the working dir)."""
    from mpp_proxy.state import open_store
    from mpp_proxy.state.sqlite import SQLiteStore

    if not url.lower().startswith("sqlite:"):
        return None
    try:
        store = open_store(url)
    except ValueError:
        return None  # reported as an invalid URL
    return Path(store.path).absolute() if isinstance(store, SQLiteStore) else None


def _safe(exc: Exception, url: str) -> str:
    """An exception message with the raw store URL (which may hold a password) blanked out."""
    text = str(exc)
    return text.replace(url, public_url(url)) if url else text


def check_state_url(config: Config, path: str) -> None:
    """The state URL parses (no I/O: `check` must not need the store to be up)."""
    from mpp_proxy.state import open_store

    try:
        open_store(config.proxy.state)
    except ValueError as error:
        raise Failure(
            f"invalid state URL {public_url(config.proxy.state)}: {error}",
            f"fix `state` under [proxy] in {path}",
            exit_code=EXIT_CONFIG,
        ) from error


def check(path: str) -> int:
    """`mpp-proxy check`: the config loads and is safe to serve; print the banner."""
    config = load(path)
    vet(config, path, workers=1)
    check_state_url(config, path)
    compile_app(config, path)
    listener = Listener(config.proxy.host, config.proxy.port)
    sys.stdout.write(render_banner(config, listener, source=str(Path(path).resolve())))
    print(f"\nconfig OK: {len(config.services)} service(s), {len(config.methods)} method(s)")
    return 0


def serve(
    path: str,
    *,
    host: str | None,
    port: int | None,
    workers: int,
    debug: bool,
    access_log: bool = False,
    shutdown: Shutdown = DEFAULT_SHUTDOWN,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> int:
    """`mpp-proxy serve`: preflight everything that can fail cheaply, then hand over to granian."""
    config = load(path)
    vet(config, path, workers)
    compile_app(config, path)
    tls = load_tls(tls_cert, tls_key)
    host = host or config.proxy.host
    bound = check_port(host, config.proxy.port if port is None else port)
    listener = Listener(host, bound, workers, tls=tls is not None)
    check_store(config, path)
    absolute = str(Path(path).resolve())
    sys.stdout.write(render_banner(config, listener, source=absolute))
    sys.stdout.flush()
    # Each granian worker builds `mpp_proxy:app` from this path in its own process; the admin
    # API's reload signals this process, as an operator's SIGHUP would.
    os.environ["MPP_PROXY_CONFIG"] = absolute
    os.environ[SERVE_PID_ENV] = str(os.getpid())
    os.environ[WORKERS_ENV] = str(listener.workers)
    run_granian(
        listener,
        debug=debug,
        access_log=access_log,
        shutdown=shutdown,
        tls=tls,
        vet_reload=lambda: reload_check(absolute, listener),
    )
    return 0


def vetted(path: str, workers: int) -> Config:
    """The config at `path` if it is fit to replace the running one (SIGHUP, POST /admin/reload):
    it loads, is safe to serve and compiles; else the Failure saying why not."""
    config = load(path)
    vet(config, path, workers)
    check_state_url(config, path)
    compile_app(config, path)
    return config


def reload_check(path: str, listener: Listener) -> bool:
    """On SIGHUP: vet the edited config before any worker is replaced; print its banner."""
    from granian.log import logger

    try:
        config = vetted(path, listener.workers)
    except Failure as failure:
        logger.error(f"reload refused, still serving the previous config: {failure.line}")
        return False
    logger.info("config reloaded: respawning workers")
    sys.stdout.write(render_banner(config, listener, source=path))
    sys.stdout.flush()
    return True


__all__ = [
    "check",
    "check_port",
    "check_state_url",
    "check_store",
    "compile_app",
    "load",
    "serve",
    "vet",
    "vetted",
]
