"""`mpp-proxy serve` as an operator runs it: banner, /healthz, a free route forwarded upstream."""

from __future__ import annotations

import json
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cli_harness import run_cli

from tests.support.proxy_process import ProxyProcess
from tests.support.upstream import Upstream

SECRET = "HMACzq5" + "k" * 40
UPSTREAM_KEY = "UPSTREAMKEYzq5"


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


def config_text(upstream_url: str, state: str) -> str:
    return f"""
[proxy]
secret_key = "${{TEST_SECRET}}"
state = "{state}"

[services.svc]
base_url = "{upstream_url}"
auth = {{ header = "X-Api-Key", value = "${{TEST_UPSTREAM_KEY}}" }}

[services.svc.routes]
"GET /echo/v1/things/:id" = "free"
"""


def get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_answers_healthz_and_forwards_a_free_route(
    serve: Callable[..., ProxyProcess], upstream: Upstream, tmp_path: Path, workers: int
) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(config_text(upstream.url, "sqlite:///state.db"))
    env = {"TEST_SECRET": SECRET, "TEST_UPSTREAM_KEY": UPSTREAM_KEY}
    served = serve("--config", str(path), "--workers", str(workers), env=env)
    port = served.port

    status, body = get(f"http://127.0.0.1:{port}/healthz")
    assert status == 200

    status, body = get(f"http://127.0.0.1:{port}/svc/echo/v1/things/42?x=1")
    assert status == 200
    echoed = json.loads(body)
    assert echoed["path"] == "/echo/v1/things/42"
    assert echoed["query"] == "x=1"
    assert ["x-api-key", UPSTREAM_KEY] in echoed["headers"]

    served.stop()
    out, err = served.streams()
    assert f"listening  http://127.0.0.1:{port}" in out
    assert "GET /svc/echo/v1/things/:id  free" in out
    assert "zq5" not in out + err  # neither the HMAC key nor the upstream key


def wait_for_status(url: str, status: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        try:
            seen = get(url)[0]
        except urllib.error.HTTPError as exc:
            seen = exc.code
        if seen == status:
            return
        time.sleep(0.1)
    raise AssertionError(f"{url} still answers {seen}, not {status}")


def test_sighup_reloads_an_edited_config_and_keeps_serving_a_broken_one(
    serve: Callable[..., ProxyProcess], upstream: Upstream, tmp_path: Path
) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(config_text(upstream.url, "sqlite:///state.db"))
    env = {"TEST_SECRET": SECRET, "TEST_UPSTREAM_KEY": UPSTREAM_KEY}
    served = serve("--config", str(path), env=env)
    port = served.port
    new_route = f"http://127.0.0.1:{port}/svc/echo/v2/added"
    wait_for_status(new_route, 404)

    path.write_text(path.read_text() + '"GET /echo/v2/added" = "free"\n')
    served.proc.send_signal(signal.SIGHUP)
    wait_for_status(new_route, 200)
    time.sleep(1.5)  # the old worker stops 1 s after the new one started: the reload is over

    path.write_text(path.read_text() + "this is not toml\n")
    served.proc.send_signal(signal.SIGHUP)
    time.sleep(1.5)  # a broken reload must not replace the workers: the route keeps working
    wait_for_status(new_route, 200)
    assert served.proc.poll() is None

    served.stop()
    out, err = served.streams()
    assert "reload refused, still serving the previous config" in out + err
    assert any(
        "GET /svc/echo/v2/added" in line and line.endswith("free") for line in out.splitlines()
    )


def test_port_0_binds_a_free_port_and_the_banner_names_it(
    upstream: Upstream, tmp_path: Path
) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(config_text(upstream.url, "sqlite:///state.db"))
    env = {"TEST_SECRET": SECRET, "TEST_UPSTREAM_KEY": UPSTREAM_KEY}
    served = ProxyProcess.serve(
        "--config", str(path), "--port", "0", folder=tmp_path, env=env, listen=False
    )
    with served:
        url = served.banner_url()
        port = int(url.rsplit(":", 1)[1])
        assert url == f"http://127.0.0.1:{port}" and port != 0
        assert get(f"{url}/healthz")[0] == 200
    out, _ = served.streams()
    assert f"{url}/llms.txt" in out


def test_options_without_a_command_serve_the_config_the_environment_names(
    upstream: Upstream, tmp_path: Path
) -> None:
    # What the container image does: ENTRYPOINT mpp-proxy, MPP_PROXY_CONFIG/HOST/PORT set.
    path = tmp_path / "proxy.toml"
    path.write_text(config_text(upstream.url, "sqlite:///state.db"))
    env = {
        "TEST_SECRET": SECRET,
        "TEST_UPSTREAM_KEY": UPSTREAM_KEY,
        "MPP_PROXY_CONFIG": str(path),
        "MPP_PROXY_HOST": "127.0.0.1",
        "MPP_PROXY_PORT": "0",
    }
    argv = [sys.executable, "-m", "mpp_proxy", "--drain-seconds", "0"]
    served = ProxyProcess.command(argv, folder=tmp_path, env=env, listen=False)
    with served:
        url = served.banner_url()
        assert get(f"{url}/svc/echo/v1/things/1")[0] == 200
    out, _ = served.streams()
    assert f"config     {path}" in out
    assert served.returncode == 0

    checked = run_cli("check", env=env)
    assert checked.code == 0, checked.err
    assert "config OK" in checked.out
