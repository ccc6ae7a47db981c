"""The container image, run with podman as an operator runs it (`make image-test`).

Each container shares the host's network (`--network host`) so that it reaches the test upstream
on 127.0.0.1 and is reached on a free loopback port: MPP_PROXY_HOST/PORT move the listener off
the image's 0.0.0.0:4402. Otherwise the command line is the documented one:

    podman run -v ./proxy.toml:/config/proxy.toml -e MPP_SECRET_KEY=... \
        IMAGE --config /config/proxy.toml
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import threading
import time
import tomllib
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.play_money import buy, play_money_config
from tests.support.ports import free_port
from tests.support.upstream import Upstream

ROOT = Path(__file__).resolve().parent.parent
IMAGE = os.environ.get("IMAGE", "mpp-proxy:latest")
# runc, and limits it may set: the default crun fails on rlimits and hybrid cgroups here.
RUNTIME = ["--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
SECRET = "image-test-" + "s" * 40

ROUTES = {"GET /echo/free": "free", "GET /sleep": "free", "GET /echo/paid": "0.01"}


def podman(
    *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["podman", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and done.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Container:
    """One `podman run -d` of the image; removed (with its logs) by `remove()`."""

    def __init__(self, *args: str, volumes: list[str], env: dict[str, str] | None = None) -> None:
        self.name = f"mpp-proxy-test-{uuid.uuid4().hex[:10]}"
        self.port = free_port()
        environment = {"MPP_PROXY_HOST": "127.0.0.1", "MPP_PROXY_PORT": str(self.port)}
        environment.update(env or {})
        flags = [f"--env={k}={v}" for k, v in environment.items()]
        flags += [f"--volume={v}" for v in volumes]
        podman("run", "--detach", "--name", self.name, "--network", "host", *RUNTIME, *flags,
               IMAGE, *args)  # fmt: skip
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if not self.running():
                break
            time.sleep(0.2)
        raise AssertionError(f"{self.name} did not get ready:\n{self.logs()}")

    def running(self) -> bool:
        state = podman("inspect", "--format", "{{.State.Running}}", self.name).stdout
        return state.strip() == "true"

    def wait_exit(self, timeout: float = 60) -> int:
        return int(podman("wait", self.name, timeout=timeout).stdout.strip())

    def logs(self) -> str:
        done = podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def remove(self) -> None:
        podman("rm", "--force", "--volumes", "--time", "0", self.name, check=False)


def config_text(upstream: Upstream, state: str | None = None) -> str:
    # No state by default: the default SQLite file, in the image's working directory.
    secret = "${MPP_SECRET_KEY}"
    return play_money_config(upstream.url, {"svc": ROUTES}, secret=secret, state=state)


@pytest.fixture(scope="module", autouse=True)
def image_exists() -> None:
    assert podman("image", "exists", IMAGE, check=False).returncode == 0, (
        f"no image {IMAGE}: run `make image-test` (it builds the image first)"
    )


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


@pytest.fixture
def config(tmp_path: Path, upstream: Upstream) -> str:
    path = tmp_path / "proxy.toml"
    path.write_text(config_text(upstream))
    return f"{path}:/config/proxy.toml:ro"


@pytest.fixture
def volume() -> Iterator[str]:
    name = f"mpp-proxy-test-{uuid.uuid4().hex[:10]}"
    podman("volume", "create", name)
    yield name
    podman("volume", "rm", "--force", name, check=False)


@pytest.fixture
def containers() -> Iterator[list[Container]]:
    started: list[Container] = []
    yield started
    for container in started:
        container.remove()


def test_image_metadata_is_the_documented_contract() -> None:
    info = json.loads(podman("image", "inspect", IMAGE).stdout)[0]
    # The docker format keeps HEALTHCHECK; podman reports it under .Config.Healthcheck.
    conf = info["Config"]
    assert conf["Entrypoint"] == ["mpp-proxy"]
    assert conf["Cmd"] == ["serve"]
    assert conf["User"] == "10001:10001"
    assert conf["WorkingDir"] == "/var/lib/mpp-proxy"
    assert "/var/lib/mpp-proxy" in conf["Volumes"]
    assert "4402/tcp" in conf["ExposedPorts"]
    assert conf["StopSignal"] == "SIGTERM"
    assert "/healthz" in " ".join(info["Healthcheck"]["Test"])
    env = dict(item.split("=", 1) for item in conf["Env"])
    assert env["MPP_PROXY_CONFIG"] == "/config/proxy.toml"
    assert (env["MPP_PROXY_HOST"], env["MPP_PROXY_PORT"]) == ("0.0.0.0", "4402")
    labels = info["Labels"]
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert labels["org.opencontainers.image.version"] == version
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert "org.opencontainers.image.source" in labels
    print(f"\nimage {IMAGE}: {info['Size'] / 1e6:.1f} MB")


def test_the_build_hosts_pip_settings_and_ca_are_not_in_the_image() -> None:
    script = (
        "test ! -e /etc/pip.conf && test ! -e /etc/ssl/pip-ca.crt && "
        "test ! -e /opt/mpp-proxy/bin/pip && test ! -d /src && test ! -d /wheels && id -u"
    )
    done = podman("run", "--rm", *RUNTIME, "--entrypoint", "sh", IMAGE, "-c", script)
    assert done.stdout.strip() == "10001"


def test_free_and_paid_routes_and_the_ledger_survives_a_new_container(
    config: str, volume: str, containers: list[Container]
) -> None:
    mounts = [config, f"{volume}:/var/lib/mpp-proxy"]
    env = {"MPP_SECRET_KEY": SECRET}
    first = Container("--config", "/config/proxy.toml", volumes=mounts, env=env)
    containers.append(first)
    first.wait_ready()
    assert httpx.get(f"{first.url}/healthz").status_code == 200
    assert podman("healthcheck", "run", first.name, check=False).returncode == 0

    free = httpx.get(f"{first.url}/svc/echo/free?x=1")
    assert (free.status_code, free.json()["path"]) == (200, "/echo/free")
    paid = "/svc/echo/paid"
    assert httpx.get(f"{first.url}{paid}").status_code == 402
    credential = asyncio.run(buy(f"{first.url}{paid}"))
    paying = {"Authorization": credential}
    assert httpx.get(f"{first.url}{paid}", headers=paying).status_code == 200
    podman("stop", first.name)
    assert first.wait_exit() == 0
    first.remove()

    # A new container on the same volume knows the payment: the credential is spent.
    second = Container(volumes=mounts, env=env)  # no arguments: CMD serve, the default config
    containers.append(second)
    second.wait_ready()
    assert httpx.get(f"{second.url}{paid}", headers=paying).status_code == 403
    ledger = podman("exec", second.name, "mpp-proxy", "ledger").stdout
    assert "ledger of sqlite:///mpp-proxy-state.db" in ledger
    assert ledger.partition("latest payments")[2].count(" delivered ") == 1
    files = podman("exec", second.name, "ls", "/var/lib/mpp-proxy").stdout.split()
    assert "mpp-proxy-state.db" in files


def test_podman_stop_lets_the_request_in_flight_finish_and_exits_0(
    config: str, volume: str, containers: list[Container], upstream: Upstream
) -> None:
    mounts = [config, f"{volume}:/var/lib/mpp-proxy"]
    args = ["--config", "/config/proxy.toml", "--drain-seconds", "2"]
    container = Container(*args, volumes=mounts, env={"MPP_SECRET_KEY": SECRET})
    containers.append(container)
    container.wait_ready()
    result: dict[str, int] = {}

    def slow() -> None:
        result["status"] = httpx.get(f"{container.url}/svc/sleep?s=3", timeout=30).status_code

    thread = threading.Thread(target=slow)
    thread.start()
    assert upstream.wait_until(lambda up: up.requests >= 1)
    stopping = threading.Thread(target=podman, args=("stop", "--time", "30", container.name))
    stopping.start()
    deadline = time.monotonic() + 5
    while httpx.get(f"{container.url}/readyz").status_code != 503:
        assert time.monotonic() < deadline, "/readyz did not turn 503"
    assert httpx.get(f"{container.url}/healthz").status_code == 200
    thread.join(30)
    stopping.join(60)
    assert result == {"status": 200}
    assert container.wait_exit() == 0
    assert "SIGTERM: /readyz answers 503; serving on for 2s" in container.logs()


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not listening(port):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        server.terminate()
        server.wait(10)


def test_two_containers_sharing_redis_accept_a_credential_once(
    tmp_path: Path, upstream: Upstream, redis_url: str, containers: list[Container]
) -> None:
    # The Compose and Kubernetes setups: replicas with their state in one Redis.
    path = tmp_path / "proxy.toml"
    path.write_text(config_text(upstream, state=redis_url))
    mounts = [f"{path}:/config/proxy.toml:ro"]
    replicas = [Container(volumes=mounts, env={"MPP_SECRET_KEY": SECRET}) for _ in range(2)]
    containers.extend(replicas)
    for replica in replicas:
        replica.wait_ready()
    first, second = (f"{replica.url}/svc/echo/paid" for replica in replicas)
    credential = asyncio.run(buy(first))
    assert httpx.get(second, headers={"Authorization": credential}).status_code == 200
    assert httpx.get(first, headers={"Authorization": credential}).status_code == 403
    assert upstream.requests == 1


def one_line_error(container: Container) -> str:
    lines = [line for line in container.logs().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("mpp-proxy: ")
    return lines[0]


def test_a_missing_config_mount_is_one_line_naming_the_path(
    volume: str, containers: list[Container]
) -> None:
    container = Container(volumes=[f"{volume}:/var/lib/mpp-proxy"])
    containers.append(container)
    assert container.wait_exit() == 2
    line = one_line_error(container)
    assert line.startswith("mpp-proxy: config file not found: /config/proxy.toml; ")
    assert "-v ./proxy.toml:/config/proxy.toml" in line


def test_an_unwritable_state_volume_is_one_line_naming_the_path(
    config: str, tmp_path: Path, containers: list[Container]
) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)  # root's, and the image runs as uid 10001
    container = Container(
        volumes=[config, f"{state}:/var/lib/mpp-proxy"], env={"MPP_SECRET_KEY": SECRET}
    )
    containers.append(container)
    assert container.wait_exit() == 1
    line = one_line_error(container)
    assert "/var/lib/mpp-proxy/mpp-proxy-state.db" in line
    assert "writable" in line


def test_a_port_already_bound_is_one_line_naming_the_port(
    config: str, volume: str, containers: list[Container]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        container = Container(
            volumes=[config, f"{volume}:/var/lib/mpp-proxy"],
            env={"MPP_SECRET_KEY": SECRET, "MPP_PROXY_PORT": str(port)},
        )
        containers.append(container)
        assert container.wait_exit() == 1
    line = one_line_error(container)
    assert f"port {port} on 127.0.0.1 is already in use" in line
