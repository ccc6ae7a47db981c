"""Configs that would start but be useless, unsafe or misread: each fails with a line that helps."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from cli_harness import EXAMPLES, run_cli

from tests.support.ports import free_port
from tests.support.proxy_process import ProxyProcess

SECRET = "edge-tests-secret-0123456789abcdef0123"


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("mpp-proxy: "), err
    return lines[0]


@pytest.mark.parametrize("command", ["check", "serve"])
def test_a_config_without_services_is_refused_with_a_hint(command: str, tmp_path: Path) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(f'[proxy]\nsecret_key = "{SECRET}"\nstate = "memory://"\n')
    port = ["--port", str(free_port())] if command == "serve" else []
    result = run_cli(command, "--config", str(path), *port)
    assert result.code == 2
    line = one_line(result.err)
    assert "defines no services: the gateway would answer 404 to every request" in line
    assert "add a [services.NAME] table" in line


@pytest.mark.parametrize("command", ["check", "serve"])
def test_a_secret_key_under_32_bytes_is_an_error(command: str, tmp_path: Path) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(
        '[proxy]\nsecret_key = "abc"\n[methods.t]\nkind = "test"\n'
        '[services.s]\nbase_url = "http://127.0.0.1:9"\n'
        '[services.s.routes]\n"GET /x" = { price = "1" }\n'
    )
    port = ["--port", str(free_port())] if command == "serve" else []
    result = run_cli(command, "--config", str(path), *port)
    assert result.code == 2
    line = one_line(result.err)
    assert "proxy.toml:2, key 'proxy.secret_key': is 3 bytes" in line
    assert "at least 32 random bytes" in line and "token_urlsafe(32)" in line
    assert '"abc"' not in line and "'abc'" not in line


ROUTES = """[proxy]
secret_key = "{secret}"
state = "memory://"

[services.echo]
base_url = "http://127.0.0.1:9"

[services.echo.routes]
"GET /ping" = "free"
{first} = "free"
"POST /other" = "free"
{second} = "free"
"""


@pytest.mark.parametrize(
    ("first", "second", "named"),
    [
        ('"GET /v1/:x"', '"GET /v1/:y"', ("GET /v1/:x", "GET /v1/:y")),
        ('"get /v1/:a/b"', '"GET /v1/:c/b"', ("GET /v1/:a/b", "GET /v1/:c/b")),
        ('"/files/*"', '"* /files/*"', ("/files/*", "* /files/*")),
    ],
)
def test_routes_that_cannot_be_told_apart_name_both_lines(
    tmp_path: Path, first: str, second: str, named: tuple[str, str]
) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(ROUTES.format(secret=SECRET, first=first, second=second))
    result = run_cli("check", "--config", str(path))
    assert result.code == 2
    line = one_line(result.err)
    found = re.search(r"proxy\.toml:(\d+), service 'echo', route '([^']+)': .*'([^']+)' "
                      r"\(line (\d+)\)", line)  # fmt: skip
    assert found, line
    assert {found.group(2), found.group(3)} == set(named)
    assert sorted([int(found.group(1)), int(found.group(4))]) == [10, 12]


def test_a_route_written_as_its_own_table_is_found_by_line(tmp_path: Path) -> None:
    path = tmp_path / "proxy.toml"
    path.write_text(
        f'[proxy]\nsecret_key = "{SECRET}"\nstate = "memory://"\nallow_test_payments = true\n'
        '[methods.t]\nkind = "test"\n'
        '[services.echo]\nbase_url = "http://127.0.0.1:9"\n'
        '[services.echo.routes]\n"GET /a/:x" = "free"\n'
        '[services.echo.routes."GET /a/:y"]\nprice = "1"\n'
    )
    result = run_cli("check", "--config", str(path))
    assert result.code == 2
    line = one_line(result.err)
    assert "proxy.toml:11, service 'echo', route 'GET /a/:y'" in line
    assert "'GET /a/:x' (line 10)" in line


def test_a_config_path_that_is_a_directory_gets_a_hint(tmp_path: Path) -> None:
    (tmp_path / "gateway.toml").write_text("")
    result = run_cli("check", "--config", str(tmp_path))
    assert result.code == 2
    line = one_line(result.err)
    assert f"config path is a directory: {tmp_path} (it holds gateway.toml)" in line
    assert f"pass the file itself, e.g. --config {tmp_path / 'gateway.toml'}" in line
    empty = tmp_path / "empty"
    empty.mkdir()
    line = one_line(run_cli("check", "--config", str(empty)).err)
    assert f"--config {empty / 'proxy.toml'}" in line


def _example_env(text: str) -> dict[str, str]:
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    names |= set(re.findall(r'env\(\s*"([A-Za-z_][A-Za-z0-9_]*)"\s*\)', text))
    env = {name: f"{name.lower()}-0123456789abcdef0123456789" for name in names}
    env |= {name: "http://127.0.0.1:9" for name in names if name.endswith("_URL")}
    env["RECIPIENT_ADDRESS"] = "0x" + "11" * 20
    return env


EXAMPLE_CONFIGS = sorted(
    [*EXAMPLES.glob("*.toml"), *EXAMPLES.glob("*.py"), EXAMPLES / "clients" / "gateway.toml"]
)


@pytest.mark.parametrize("example", EXAMPLE_CONFIGS, ids=lambda p: p.name)
def test_every_example_serves_from_a_fresh_directory(example: Path, tmp_path: Path) -> None:
    # `check` passing and `serve` failing on a missing state directory must not come back:
    # relative state paths are created under the directory serve runs in, absolute ones too.
    config = tmp_path / "conf" / example.name
    config.parent.mkdir()
    text = example.read_text(encoding="utf-8")
    absolute = "sqlite:////var/lib/mpp-proxy/state.db"
    moved = f"sqlite:///{tmp_path}/var/lib/mpp-proxy/state.db"
    config.write_text(text.replace(absolute, moved), encoding="utf-8")
    workdir = tmp_path / "run"
    workdir.mkdir()
    env = _example_env(text)
    with ProxyProcess.serve("--config", str(config), folder=workdir, env=env) as served:
        assert httpx.get(f"{served.url}/healthz").status_code == 200
    state = re.search(r'sqlite:///([^"?]+)', config.read_text(encoding="utf-8"))
    assert state, "every example keeps its ledger in SQLite"
    path = Path(state.group(1))
    assert (path if path.is_absolute() else workdir / path).is_file()
