"""A private redis-server (no persistence) on a free loopback port, started and stopped here."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.support.ports import free_port


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_server() -> Iterator[int]:
    """Yields the port of a fresh redis-server; raises RuntimeError when none can start
    (`make tools` installs it)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run `make tools`")
    for _attempt in range(5):
        port = free_port()
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1"]
        proc = subprocess.Popen(
            [*argv, "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            if redis_answers(port):
                break
            time.sleep(0.02)
        if proc.poll() is None and redis_answers(port):
            break
        proc.kill()
        proc.wait()
    else:
        raise RuntimeError("could not start redis-server on a free loopback port")
    try:
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="session")
def redis_port() -> Iterator[int]:
    """The `redis_port` fixture (a conftest imports it): one redis-server for the session."""
    try:
        with redis_server() as port:
            yield port
    except RuntimeError as exc:
        pytest.fail(str(exc))
