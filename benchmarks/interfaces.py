"""`python -m benchmarks.interfaces`: granian's two Python interfaces, ASGI and RSGI.

    ceiling   the fixed-response app on each (benchmarks/peers/granian_fixed.py and
              granian_fixed_rsgi.py, the same bytes), small GET at 64 connections in
              interleaved rounds (benchmarks.compare.scenario): the best req/s and the least
              server CPU per request of each, and RSGI's over ASGI's
    fidelity  one raw request whose path holds an encoded slash, encoded dots and an encoded
              byte above 0x7f, and whose header value holds a raw byte above 0x7f, sent to an
              echo app on each interface: the path and headers each hands the app

mpp-proxy's router refuses encoded slashes and dot segments and forwards the matched path byte
for byte (docs/routing.md): the fidelity rows say whether an interface hands it what that
takes. Results go to benchmarks/results/interfaces.json.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.compare import RESULTS, ROOT, scenario
from benchmarks.procs import Cores, Server, ensure_debian_packages, free_port
from benchmarks.run import granian_argv

APPS = {
    "asgi": "benchmarks.peers.granian_fixed:app",
    "rsgi": "benchmarks.peers.granian_fixed_rsgi:app",
}
ECHOES = {
    "asgi": "benchmarks.peers.granian_fixed_rsgi:echo_asgi",
    "rsgi": "benchmarks.peers.granian_fixed_rsgi:echo",
}
PROBE_PATH = b"/bench/a%2Fb/%2e%2e/%C3%A9%FF"
PROBE_HEADER = (b"x-probe", b"caf\xe9")


def _server(name: str, interface: str, app: str, work: Path, cores: Cores, ready: str) -> Server:
    port = free_port()
    argv = granian_argv(port, app)
    argv[argv.index("--interface") + 1] = interface
    server = Server(
        name, cores.pin(argv, cores.server), port, work, {"PYTHONPATH": str(ROOT)}, ready
    )
    server.start()
    return server


def ceiling(work: Path, cores: Cores, args: argparse.Namespace) -> dict[str, Any]:
    sides = {k: _server(f"fixed-{k}", k, app, work, cores, "/small") for k, app in APPS.items()}
    try:
        return scenario(sides, "/small", 64, args, cores, pairs=(("rsgi", "asgi"),))
    finally:
        for server in sides.values():
            server.stop()


def _probe(port: int) -> dict[str, Any]:
    """What the echo app on `port` says it was handed for the probe request."""
    name, value = PROBE_HEADER
    request = b"GET %s HTTP/1.1\r\nhost: bench\r\n%s: %s\r\nconnection: close\r\n\r\n" % (
        PROBE_PATH,
        name,
        value,
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if status != 200:
        return {"status": status}
    seen: dict[str, Any] = json.loads(body)
    headers = {k: v for k, v in seen["headers"]}
    return {
        "status": status,
        "path": seen["path"],
        "raw_path_kept": seen["path"] == PROBE_PATH.decode("latin-1"),
        "probe_header": headers.get(name.decode()),
        "probe_header_kept": headers.get(name.decode()) == value.decode("latin-1"),
    }


def fidelity(work: Path, cores: Cores) -> dict[str, Any]:
    out = {}
    for key, app in ECHOES.items():
        server = _server(f"echo-{key}", key, app, work, cores, "/")
        try:
            out[key] = _probe(server.port)
        finally:
            server.stop()
        print(f"  {key}: {out[key]}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    ensure_debian_packages({"wrk": "wrk"})
    cores = Cores.detect()
    with tempfile.TemporaryDirectory(prefix="mpp-proxy-interfaces-") as tmp:
        work = Path(tmp)
        report = {
            "probe": {"path": PROBE_PATH.decode(), "header": PROBE_HEADER[1].decode("latin-1")},
            "fidelity": fidelity(work, cores),
            "ceiling_small_get_64": ceiling(work, cores, args),
        }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "interfaces.json").write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
