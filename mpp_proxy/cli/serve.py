"""`serve` and `check`: load and vet a config, preflight the listener and store, run granian."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mpp_proxy.cli.banner import Listener, render_banner
from mpp_proxy.cli.failure import EXIT_CONFIG, Failure
from mpp_proxy.cli.redact import public_url
from mpp_proxy.config.errors import ConfigError
from mpp_proxy.config.model import Config, TestMoneyMethod

# Where prometheus-client's multiprocess mode keeps each worker's values; what the access log
# defaults to under `serve` (names shared with mpp_proxy.observe, which this module does not
# import before granian starts).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
ACCESS_LOG_ENV = "MPP_PROXY_ACCESS_LOG"

STORE_TIMEOUT = 5.0
# The loaders' wording for an unset ${VAR}; used only to print the matching fix.
_MISSING_ENV = re.compile(r"environment variable (\w+) is not set")


def load(path: str) -> Config:
    """The config at `path`, or a Failure naming what is wrong (exit 2)."""
    file = Path(path)
    if not file.exists():
        raise Failure(
            f"config file not found: {path}",
            "pass --config with the path of a proxy.toml or proxy.py (see examples/)",
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
        raise Failure(
            f"invalid config: {error.located(file=path).message}",
            f"fix it, then check with `mpp-proxy check --config {path}`",
            exit_code=EXIT_CONFIG,
        ) from error


def vet(config: Config, path: str, workers: int) -> None:
    """Refuse configs that would run but be unsafe: free test money, unshared replay state."""
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


def check_port(host: str, port: int) -> None:
    """Bind and release the listener first, so a busy port is one clear line, not a crash."""
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
    if url.lower().startswith("sqlite:"):
        fix = (
            "make sure its directory exists and is writable (sqlite:///relative.db or "
            f"sqlite:////absolute/path.db), or change `state` under [proxy] in {path}"
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
) -> int:
    """`mpp-proxy serve`: preflight everything that can fail cheaply, then hand over to granian."""
    config = load(path)
    vet(config, path, workers)
    with metrics_directory(), access_log_default(config):
        return _serve(
            config, path, host=host, port=port, workers=workers, debug=debug, access_log=access_log
        )


def _serve(
    config: Config,
    path: str,
    *,
    host: str | None,
    port: int | None,
    workers: int,
    debug: bool,
    access_log: bool,
) -> int:
    compile_app(config, path)
    listener = Listener(
        host or config.proxy.host, config.proxy.port if port is None else port, workers
    )
    check_port(listener.host, listener.port)
    check_store(config, path)
    absolute = str(Path(path).resolve())
    sys.stdout.write(render_banner(config, listener, source=absolute))
    sys.stdout.flush()
    # Each granian worker builds `mpp_proxy:app` from this path in its own process.
    os.environ["MPP_PROXY_CONFIG"] = absolute
    run_granian(listener, absolute, debug=debug, access_log=access_log)
    return 0


def reload_check(path: str, listener: Listener) -> bool:
    """On SIGHUP: vet the edited config before any worker is replaced; print its banner."""
    from granian.log import logger

    try:
        config = load(path)
        vet(config, path, listener.workers)
        check_state_url(config, path)
        compile_app(config, path)
    except Failure as failure:
        logger.error(f"reload refused, still serving the previous config: {failure.line}")
        record_reload(success=False)
        return False
    logger.info("config reloaded: respawning workers")
    record_reload(success=True)
    sys.stdout.write(render_banner(config, listener, source=path))
    sys.stdout.flush()
    return True


@contextlib.contextmanager
def metrics_directory() -> Iterator[None]:
    """The directory every worker writes its metric values into, so that whichever worker
    answers /metrics reports the whole server; made for this server's life and removed after.
    Values of workers replaced by a reload stay in it: counters never go back."""
    if os.environ.get(MULTIPROC_ENV):
        yield  # the operator chose one (and cleans it)
        return
    directory = tempfile.mkdtemp(prefix="mpp-proxy-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    try:
        yield
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def access_log_default(config: Config) -> Iterator[None]:
    """Under `serve` the access log is on unless [proxy.log] access = false."""
    access = config.observe.log.access
    os.environ[ACCESS_LOG_ENV] = "0" if access is False else "1"
    try:
        yield
    finally:
        os.environ.pop(ACCESS_LOG_ENV, None)


def record_reload(*, success: bool) -> None:
    from mpp_proxy.observe.metrics import record_reload as count

    count(success)


def run_granian(listener: Listener, path: str, *, debug: bool, access_log: bool = False) -> None:
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.log import LogLevels

    base: Any = Granian  # an alias of the process or thread server class, by Python build

    class Server(base):  # type: ignore[misc]
        """Granian whose SIGHUP reload keeps the old workers when the new config is broken."""

        def _reload(self, spawn_target: Any, target_loader: Any) -> Any:
            if reload_check(path, listener):
                return super()._reload(spawn_target, target_loader)
            # What granian's own _reload resets, so the next SIGHUP is heard again.
            self.reload_signal = False
            self.main_loop_interrupt.clear()
            return None

    server = Server(
        target="mpp_proxy:app",
        address=listener.host,
        port=listener.port,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        http=HTTPModes.http1,
        workers=listener.workers,
        log_level=LogLevels.debug if debug else LogLevels.info,
        log_access=access_log,
        respawn_failed_workers=False,
        # On reload, how long new workers run beside the old ones before those are stopped.
        respawn_interval=1.0,
    )
    try:
        server.serve()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise Failure(
                "the server stopped with an error (see the log above)",
                "run again with --debug for details",
            ) from exc


__all__ = [
    "check",
    "check_port",
    "check_state_url",
    "check_store",
    "compile_app",
    "load",
    "serve",
    "vet",
]
