"""Loopback ports for test servers: the OS hands them out, so parallel runs never collide."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A loopback port the OS just handed out (released again, so a server can bind it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def closed_port() -> int:
    """A loopback port nothing listens on (handed out, then released; reuse within a test is
    unlikely)."""
    return free_port()
