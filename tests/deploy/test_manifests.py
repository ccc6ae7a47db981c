"""Every deploy file in docs/deploy is checked by the tool that would read it, and against the
image's contract: its configs pass `mpp-proxy check`, the Compose file goes through
podman-compose, the Kubernetes manifests through the API schemas, the unit through
`systemd-analyze verify`; and all of them wait long enough for the drain."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from deploy_support import (
    DEPLOY,
    DRAIN_SECONDS,
    GRACEFUL_TIMEOUT,
    ROOT,
    SECRETS,
    VERSION,
    dockerfile_runtime,
    serve_args_timings,
)

BIN = Path(sys.executable).parent
KUBERNETES_VERSION = "1.33.0"  # the oldest minor release still maintained


def check(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MPP_")}
    return subprocess.run(
        [sys.executable, "-m", "mpp_proxy", "check", "--config", str(config)],
        capture_output=True,
        text=True,
        env={**clean, **env},
        timeout=60,
    )


def kubernetes_documents() -> list[dict[str, Any]]:
    text = (DEPLOY / "kubernetes" / "mpp-proxy.yaml").read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc]


def kubernetes_object(kind: str, name: str) -> dict[str, Any]:
    for doc in kubernetes_documents():
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    raise AssertionError(f"no {kind} {name} in mpp-proxy.yaml")


def kubernetes_config(tmp_path: Path) -> Path:
    path = tmp_path / "proxy.toml"
    path.write_text(kubernetes_object("ConfigMap", "mpp-proxy-config")["data"]["proxy.toml"])
    return path


# ------------------------------------------------------------------------------- configs


@pytest.mark.parametrize("config", ["compose/proxy.toml", "fly/proxy.toml", "kubernetes"])
def test_every_shipped_config_passes_check(config: str, tmp_path: Path) -> None:
    path = kubernetes_config(tmp_path) if config == "kubernetes" else DEPLOY / config
    result = check(path, SECRETS)
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stdout, result.stdout


def test_the_kubernetes_secret_as_shipped_keeps_the_proxy_from_starting(tmp_path: Path) -> None:
    secret = kubernetes_object("Secret", "mpp-proxy-secrets")["stringData"]
    assert set(secret) == set(SECRETS)  # every variable the config reads, and no other
    assert set(secret.values()) == {""}
    config = kubernetes_config(tmp_path)
    assert check(config, secret).returncode == 2
    no_key = check(config, {**SECRETS, "MPP_SECRET_KEY": ""})
    assert no_key.returncode == 2
    assert "a paid route needs proxy.secret_key" in no_key.stderr


# ------------------------------------------------------------------------------- compose


@pytest.fixture
def compose(tmp_path: Path) -> dict[str, Any]:
    """`podman-compose config` of a copy of docs/deploy/compose, with its secrets.env filled."""
    copy = tmp_path / "docs" / "deploy" / "compose"
    shutil.copytree(DEPLOY / "compose", copy)
    (copy / "secrets.env").write_text("".join(f"{k}={v}\n" for k, v in SECRETS.items()))
    done = subprocess.run(
        [str(BIN / "podman-compose"), "--dry-run", "-f", "compose.yaml", "config"],
        capture_output=True,
        text=True,
        cwd=copy,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    parsed: dict[str, Any] = yaml.safe_load(done.stdout)
    parsed["x-dir"] = copy
    return parsed


def test_compose_runs_two_replicas_sharing_redis_behind_nginx(compose: dict[str, Any]) -> None:
    services = compose["services"]
    proxy, redis, nginx = services["proxy"], services["redis"], services["nginx"]
    assert proxy["deploy"]["replicas"] == 2
    assert proxy["image"] == f"mpp-proxy:{VERSION}"
    assert "./proxy.toml:/config/proxy.toml:ro" in proxy["volumes"]
    assert proxy["env_file"] in ("secrets.env", ["secrets.env"])
    config = tomllib.loads((compose["x-dir"] / "proxy.toml").read_text())
    assert config["proxy"]["state"] == "redis://redis:6379/0"
    assert "--appendonly" in redis["command"]
    assert "443:443" in nginx["ports"]
    assert "./nginx.conf:/etc/nginx/conf.d/default.conf:ro" in nginx["volumes"]
    assert "server proxy:4402" in (compose["x-dir"] / "nginx.conf").read_text()


def test_compose_builds_this_repository_and_waits_for_the_drain(compose: dict[str, Any]) -> None:
    proxy = compose["services"]["proxy"]
    context = (compose["x-dir"] / proxy["build"]["context"]).resolve()
    assert context == compose["x-dir"].parents[2]  # the repository root of the copy
    assert (ROOT / "docs" / "deploy" / "compose").relative_to(ROOT) == Path("docs/deploy/compose")
    drain, graceful = serve_args_timings(proxy["command"])
    assert (drain, graceful) == (DRAIN_SECONDS, GRACEFUL_TIMEOUT)
    assert int(proxy["stop_grace_period"].rstrip("s")) > drain + graceful


# ------------------------------------------------------------------------------- kubernetes


def test_the_kubernetes_manifests_are_valid_against_the_api_schemas() -> None:
    documents = kubernetes_documents()
    kinds = sorted(doc["kind"] for doc in documents)
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Secret",
        "Service",
        "Service",
        "StatefulSet",
    ]
    for doc in documents:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_kubernetes_probes_drain_and_run_as_the_images_user() -> None:
    image = dockerfile_runtime()
    pod = kubernetes_object("Deployment", "mpp-proxy")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == f"mpp-proxy:{VERSION}"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["ports"][0]["containerPort"] == int(image["EXPOSE"])
    drain, graceful = serve_args_timings(container["args"])
    assert (drain, graceful) == (DRAIN_SECONDS, GRACEFUL_TIMEOUT)
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", f"{drain:g}"]
    assert pod["terminationGracePeriodSeconds"] > 2 * drain + graceful
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert f"{security['runAsUser']}:{security['runAsGroup']}" == image["USER"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["requests"]["memory"]
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert Path(image["MPP_PROXY_CONFIG"]).parent.as_posix() in mounts


def test_kubernetes_config_points_at_the_redis_service(tmp_path: Path) -> None:
    state = tomllib.loads(kubernetes_config(tmp_path).read_text())["proxy"]["state"]
    redis = kubernetes_object("Service", "mpp-proxy-redis")
    assert state == f"redis://{redis['metadata']['name']}:{redis['spec']['ports'][0]['port']}/0"
    statefulset = kubernetes_object("StatefulSet", "mpp-proxy-redis")
    assert "--appendonly" in statefulset["spec"]["template"]["spec"]["containers"][0]["args"]


# ------------------------------------------------------------------------------- systemd


def test_the_systemd_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = (DEPLOY / "systemd" / "mpp-proxy.service").read_text()
    # The unit as installed from this checkout: verify also checks that ExecStart exists.
    installed = unit.replace("/opt/mpp-proxy/bin/mpp-proxy", str(BIN / "mpp-proxy"))
    assert installed.count(str(BIN)) == 1
    path = tmp_path / "mpp-proxy.service"
    path.write_text(installed)
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def test_the_systemd_unit_is_hardened_and_drains() -> None:
    settings: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / "mpp-proxy.service").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            settings.setdefault(key, []).append(value)
    assert settings["DynamicUser"] == ["yes"]
    assert settings["StateDirectory"] == ["mpp-proxy"]
    assert settings["WorkingDirectory"] == ["/var/lib/mpp-proxy"]
    assert settings["ProtectSystem"] == ["strict"]
    assert settings["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    # SIGTERM to the main process only: a worker signalled directly would stop undrained.
    assert settings["KillMode"] == ["mixed"]
    drain, graceful = serve_args_timings(settings["ExecStart"][0].split())
    assert (drain, graceful) == (DRAIN_SECONDS, GRACEFUL_TIMEOUT)
    assert int(settings["TimeoutStopSec"][0]) > drain + graceful


# ------------------------------------------------------------------------------- fly.io


def test_fly_toml_checks_readiness_and_keeps_the_ledger_on_a_volume() -> None:
    image = dockerfile_runtime()
    fly = tomllib.loads((DEPLOY / "fly" / "fly.toml").read_text())
    service = fly["http_service"]
    assert service["internal_port"] == int(image["MPP_PROXY_PORT"]) == int(image["EXPOSE"])
    assert [c["path"] for c in service["checks"]] == ["/readyz"]
    assert fly["checks"]["alive"]["path"] == "/healthz"
    assert fly["checks"]["alive"]["port"] == service["internal_port"]
    assert fly["mounts"]["destination"] == image["VOLUME"] == image["WORKDIR"]
    assert (fly["kill_signal"], fly["build"]["dockerfile"]) == ("SIGTERM", "Dockerfile")
    assert fly["kill_timeout"] > DRAIN_SECONDS + GRACEFUL_TIMEOUT
    (file,) = fly["files"]
    assert file["guest_path"] == image["MPP_PROXY_CONFIG"]
    # Deployed from the repository root with proxy.toml copied beside fly.toml.
    assert (DEPLOY / "fly" / file["local_path"]).is_file()
    assert (ROOT / fly["build"]["dockerfile"]).is_file()
    # The SQLite file is on the volume.
    config = tomllib.loads((DEPLOY / "fly" / file["local_path"]).read_text())
    state = Path(config["proxy"]["state"].removeprefix("sqlite:///"))
    assert state.parent == Path(fly["mounts"]["destination"])
