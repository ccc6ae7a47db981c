"""The TLS guide's front ends, for real where the machine has them: nginx (the Compose file's
nginx.conf) terminating TLS in front of the proxy, and the Caddyfile through `caddy validate`."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme
from deploy_support import DEPLOY

from mpp_proxy import Proxy, load_config
from tests.support.play_money import buy, play_money_config
from tests.support.ports import free_port
from tests.support.served import Served
from tests.support.upstream import Upstream

ROUTES = {"GET /echo/free": "free", "GET /echo/paid": "0.01", "GET /sse": "free"}


class Nginx:
    """The guide's server blocks inside a minimal nginx main config, on free loopback ports."""

    def __init__(self, prefix: Path, proxy_port: int, cert: Path, key: Path) -> None:
        self.https_port, self.http_port = free_port(), free_port()
        site = (DEPLOY / "compose" / "nginx.conf").read_text()
        for guide, here in [
            ("server proxy:4402", f"server 127.0.0.1:{proxy_port}"),
            ("listen 443 ssl;", f"listen 127.0.0.1:{self.https_port} ssl;"),
            ("listen 80;", f"listen 127.0.0.1:{self.http_port};"),
            ("/etc/nginx/tls/fullchain.pem", str(cert)),
            ("/etc/nginx/tls/privkey.pem", str(key)),
        ]:
            assert site.count(guide) == 1, guide
            site = site.replace(guide, here)
        (prefix / "site.conf").write_text(site)
        temp = prefix / "tmp"
        temp.mkdir()
        user = "user root;" if os.geteuid() == 0 else ""
        (prefix / "nginx.conf").write_text(
            f"""{user}
daemon off;
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {prefix}/site.conf;
}}
"""
        )
        self.proc = subprocess.Popen(
            ["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.https_port), timeout=0.2).close()
                break
            except OSError:
                assert self.proc.poll() is None, self.proc.communicate()[1]
                assert time.monotonic() < deadline, "nginx did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def trusted(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest.fixture
def nginx(tmp_path: Path, ca: trustme.CA) -> Iterator[Nginx]:
    cert = ca.issue_cert("api.example.com", "127.0.0.1")
    cert.private_key_pem.write_to_path(str(tmp_path / "privkey.pem"))
    with (tmp_path / "fullchain.pem").open("wb") as chain:
        for pem in cert.cert_chain_pems:
            chain.write(pem.bytes())
    with Upstream() as upstream:
        config = play_money_config(
            upstream.url, {"svc": ROUTES}, secret="n" * 40, proxy='realm = "api.example.com"'
        )
        (tmp_path / "proxy.toml").write_text(config)
        with Served(Proxy(load_config(str(tmp_path / "proxy.toml")))) as proxy:
            front = Nginx(
                tmp_path, proxy.port, tmp_path / "fullchain.pem", tmp_path / "privkey.pem"
            )
            try:
                yield front
            finally:
                front.stop()


def test_nginx_terminates_tls_and_forwards_free_and_paid_routes(
    nginx: Nginx, trusted: ssl.SSLContext
) -> None:
    url = f"https://127.0.0.1:{nginx.https_port}"
    with httpx.Client(base_url=url, verify=trusted) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        free = client.get("/svc/echo/free", headers={"X-Forwarded-For": "203.0.113.9"})
        assert free.status_code == 200
        # The spoofable header a client sent never reaches the upstream.
        assert "203.0.113.9" not in json.dumps(free.json()["headers"])

        challenge = client.get("/svc/echo/paid")
        assert challenge.status_code == 402
        assert challenge.headers["www-authenticate"].startswith("Payment ")
        assert challenge.headers["cache-control"] == "no-store"
        credential = asyncio.run(buy(f"{url}/svc/echo/paid", verify=trusted))
        paid = client.get("/svc/echo/paid", headers={"Authorization": credential})
        assert paid.status_code == 200
        assert "payment-receipt" in paid.headers


def test_nginx_streams_server_sent_events_as_they_come(
    nginx: Nginx, trusted: ssl.SSLContext
) -> None:
    url = f"https://127.0.0.1:{nginx.https_port}/svc/sse?n=3&interval=0.5"
    arrivals: list[float] = []
    with httpx.stream("GET", url, verify=trusted, timeout=10) as response:
        assert response.status_code == 200
        started = time.monotonic()
        for line in response.iter_lines():
            if line.startswith("data:"):
                arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 3
    # Buffered, all three would arrive together at the end (~1.5 s).
    assert arrivals[0] < arrivals[-1] - 0.5


def test_nginx_redirects_plain_http_to_https(nginx: Nginx) -> None:
    answer = httpx.get(f"http://127.0.0.1:{nginx.http_port}/svc/echo/free")
    assert answer.status_code == 301
    assert answer.headers["location"].startswith("https://")


def test_the_caddyfile_is_valid_for_caddy(tmp_path: Path) -> None:
    env = dict(os.environ, HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path))
    env["XDG_CONFIG_HOME"] = str(tmp_path)
    caddyfile = str(DEPLOY / "caddy" / "Caddyfile")
    adapter = ["--config", caddyfile, "--adapter", "caddyfile"]
    done = subprocess.run(
        ["caddy", "validate", *adapter], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "Valid configuration" in done.stdout + done.stderr
    adapted = subprocess.run(
        ["caddy", "adapt", *adapter], capture_output=True, text=True, env=env, timeout=60
    )
    handler = json.loads(adapted.stdout)["apps"]["http"]["servers"]["srv0"]["routes"][0]
    proxy = handler["handle"][0]["routes"][0]["handle"][0]
    assert proxy["handler"] == "reverse_proxy"
    assert proxy["health_checks"]["active"]["uri"] == "/readyz"
    assert proxy["flush_interval"] == -1
