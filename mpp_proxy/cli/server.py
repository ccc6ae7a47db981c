"""granian in the main process: TLS files, a SIGTERM that drains before it stops, vetted reloads."""

from __future__ import annotations

import math
import multiprocessing
import signal
import ssl
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mpp_proxy.cli.banner import Listener
from mpp_proxy.cli.failure import EXIT_CONFIG, Failure

# A worker that has not exited this long after its graceful timeout is killed (its paid
# requests, if any, are credited by the ledger sweep once their lease runs out).
KILL_MARGIN = 10.0


@dataclass(frozen=True, slots=True)
class Shutdown:
    """What SIGTERM does: /readyz answers 503 while the listener serves on for
    `drain_seconds`; then in-flight requests get `graceful_timeout` before they are cancelled
    (a cancelled paid request is credited). A second SIGTERM skips what is left of the drain."""

    drain_seconds: float = 5.0
    graceful_timeout: float = 30.0


DEFAULT_SHUTDOWN = Shutdown()


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """A PEM certificate chain and its unencrypted private key: granian serves HTTPS."""

    cert: str
    key: str


def load_tls(cert: str | None, key: str | None) -> TLSFiles | None:
    """The TLS files load as a server certificate and key, or a Failure naming the file."""
    if cert is None and key is None:
        return None
    if not cert or not key:
        raise Failure(
            "--tls-cert and --tls-key go together",
            "pass both: the PEM certificate chain and its private key",
            exit_code=EXIT_CONFIG,
        )
    for what, path in (("certificate", cert), ("key", key)):
        if not Path(path).is_file():
            raise Failure(f"TLS {what} not found: {path}", exit_code=EXIT_CONFIG)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key, password=_no_password)
    except _EncryptedKey as exc:
        raise Failure(
            f"TLS key {key} is encrypted",
            "pass the private key unencrypted (readable by this user only)",
            exit_code=EXIT_CONFIG,
        ) from exc
    except PermissionError as exc:
        raise Failure(
            f"cannot read TLS file {exc.filename or cert}: permission denied",
            exit_code=EXIT_CONFIG,
        ) from exc
    except ssl.SSLError as exc:
        reason = getattr(exc, "reason", None) or exc
        raise Failure(
            f"TLS certificate {cert} and key {key} do not load ({reason})",
            "pass a PEM certificate chain and the unencrypted private key that matches it",
            exit_code=EXIT_CONFIG,
        ) from exc
    return TLSFiles(cert, key)


class _EncryptedKey(Exception):
    pass


def _no_password() -> str:
    # An encrypted key would otherwise prompt on the terminal; it fails to load instead.
    raise _EncryptedKey


def run_granian(
    listener: Listener,
    *,
    debug: bool,
    access_log: bool = False,
    shutdown: Shutdown = DEFAULT_SHUTDOWN,
    tls: TLSFiles | None = None,
    vet_reload: Callable[[], bool] = lambda: True,
) -> None:
    """Serve `mpp_proxy:app` (built by each worker from MPP_PROXY_CONFIG) until stopped."""
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops, SSLProtocols
    from granian.log import LogLevels

    from mpp_proxy.core import drain

    # Created before granian forks its workers: each inherits the pipes it listens to. Forked,
    # as granian does on Linux up to Python 3.13; later Pythons would have it spawn them.
    if sys.platform == "linux":
        multiprocessing.set_start_method("fork", force=True)
    told = drain.share(shutdown.graceful_timeout)
    Server = _draining_granian(Granian, told, shutdown, vet_reload)

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
        workers_kill_timeout=math.ceil(shutdown.graceful_timeout + KILL_MARGIN),
        ssl_cert=Path(tls.cert) if tls else None,
        ssl_key=Path(tls.key) if tls else None,
        # TLS 1.2 and 1.3: what the agents' HTTP stacks and load balancers in front speak.
        ssl_protocol_min=SSLProtocols.tls12,
    )
    try:
        server.serve()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise Failure(
                "the server stopped with an error (see the log above)",
                "run again with --debug for details",
            ) from exc


def _draining_granian(
    granian: Any, told: Any, shutdown: Shutdown, vet_reload: Callable[[], bool]
) -> Any:
    """The Granian server class that drains on SIGTERM and keeps the old workers when a
    reload is broken."""
    from granian.log import logger

    base: Any = granian  # an alias of the process or thread server class, by Python build

    class Server(base):  # type: ignore[misc]
        """Granian that drains on SIGTERM and keeps the old workers when a reload is broken."""

        draining = False

        def signal_handler_interrupt(self, *args: Any) -> None:
            signum = args[0] if args else None
            if signum != signal.SIGTERM or self.draining:
                super().signal_handler_interrupt(*args)
                return
            self.draining = True
            told.announce()
            logger.info(
                f"SIGTERM: /readyz answers 503; serving on for {shutdown.drain_seconds:g}s, "
                f"then in-flight requests get up to {shutdown.graceful_timeout:g}s"
            )
            timer = threading.Timer(shutdown.drain_seconds, super().signal_handler_interrupt)
            timer.daemon = True
            timer.start()

        def _stop_workers(self) -> None:
            told.stopping()
            super()._stop_workers()

        def _reload(self, spawn_target: Any, target_loader: Any) -> Any:
            if vet_reload():
                return super()._reload(spawn_target, target_loader)
            # What granian's own _reload resets, so the next SIGHUP is heard again.
            self.reload_signal = False
            self.main_loop_interrupt.clear()
            return None

    return Server
