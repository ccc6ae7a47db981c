"""Every expected failure is one line naming the problem and the fix, with its exit code."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cli_harness import EXAMPLES, run_cli

from tests.support.ports import closed_port, free_port

SECRET = "S" * 40


def write(tmp_path: Path, text: str, name: str = "proxy.toml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def minimal(state: str = "memory://", extra: str = "") -> str:
    return f"""
[proxy]
secret_key = "{SECRET}"
state = "{state}"
{extra}

[services.echo]
base_url = "http://127.0.0.1:9"

[services.echo.routes]
"GET /ping" = "free"
"""


def assert_one_clean_line(err: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("mpp-proxy: ")
    assert "Traceback" not in err


def test_version() -> None:
    result = run_cli("--version")
    assert result.code == 0
    assert result.out.strip() == "mpp-proxy 0.1.0"


@pytest.mark.parametrize("command", ["check", "serve", "ledger"])
def test_missing_config_file_exits_2(command: str, tmp_path: Path) -> None:
    result = run_cli(command, "--config", str(tmp_path / "nope.toml"))
    assert result.code == 2
    assert_one_clean_line(result.err)
    assert "config file not found" in result.err
    assert "nope.toml" in result.err


def test_invalid_config_names_the_file_and_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, minimal(extra="prot = 4402"))
    result = run_cli("check", "--config", path)
    assert result.code == 2
    assert_one_clean_line(result.err)
    assert "proxy.toml" in result.err
    assert "prot" in result.err


def test_missing_environment_variable_is_named_with_the_fix(tmp_path: Path) -> None:
    path = write(tmp_path, minimal().replace(SECRET, "${MPP_TEST_UNSET_SECRET}"))
    result = run_cli("serve", "--config", path)
    assert result.code == 2
    assert_one_clean_line(result.err)
    assert "MPP_TEST_UNSET_SECRET is not set" in result.err
    assert "export MPP_TEST_UNSET_SECRET=" in result.err


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run_cli("check", "--debug", "--config", str(tmp_path / "nope.toml"))
    assert result.code == 2
    assert "Traceback" in result.err


def test_port_in_use_exits_1(tmp_path: Path) -> None:
    path = write(tmp_path, minimal())
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("serve", "--config", path, "--port", str(port))
    assert result.code == 1
    assert_one_clean_line(result.err)
    assert f"port {port} on 127.0.0.1 is already in use" in result.err
    assert "--port" in result.err


def test_unreachable_redis_exits_1_without_leaking_its_password(tmp_path: Path) -> None:
    port = closed_port()
    path = write(tmp_path, minimal(state=f"redis://:REDISPASSzq1@127.0.0.1:{port}/0"))
    result = run_cli("serve", "--config", path, "--port", str(free_port()))
    assert result.code == 1, result.err
    assert_one_clean_line(result.err)
    assert f"state store redis://127.0.0.1:{port}/0" in result.err
    assert "REDISPASS" not in result.err + result.out


def test_test_money_without_allow_test_payments_is_refused(tmp_path: Path) -> None:
    config = minimal() + '\n[methods.play]\nkind = "test"\n'
    config = config.replace('"GET /ping" = "free"', '"GET /ping" = { price = "0.01" }')
    path = write(tmp_path, config)
    result = run_cli("serve", "--config", path, "--port", str(free_port()))
    assert result.code == 2
    assert_one_clean_line(result.err)
    assert "allow_test_payments = true" in result.err


def test_memory_state_with_several_workers_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, minimal(state="memory://"))
    result = run_cli("serve", "--config", path, "--workers", "2", "--port", str(free_port()))
    assert result.code == 2
    assert_one_clean_line(result.err)
    assert "replay protection would not be shared" in result.err


DUMMY_ENV = {
    "MPP_SECRET_KEY": "dummy-secret-key-for-check-0123456789abcdef",
    "RECIPIENT_ADDRESS": "0x1111111111111111111111111111111111111111",
    "OPENAI_API_KEY": "sk-DUMMYOPENAIzq7",
    "ANTHROPIC_API_KEY": "sk-ant-DUMMYANTHROPICzq7",
    "STRIPE_SECRET_KEY": "sk_test_DUMMYSTRIPEzq7",
    "STRIPE_NETWORK_ID": "net_dummy",
    "WEATHER_API_KEY": "DUMMYWEATHERzq7",
    "GEO_USER": "DUMMYGEOUSERzq7",
    "GEO_PASSWORD": "DUMMYGEOPASSzq7",
}


@pytest.mark.parametrize(
    "example", sorted(p.name for p in EXAMPLES.iterdir() if p.suffix in (".toml", ".py"))
)
def test_every_example_passes_check_without_printing_a_secret(example: str) -> None:
    result = run_cli("check", "--config", str(EXAMPLES / example), env=DUMMY_ENV)
    assert result.code == 0, result.err
    assert "config OK" in result.out
    assert "zq7" not in result.out + result.err
    assert "dummy-secret-key" not in result.out + result.err


def test_the_console_script_is_the_same_program() -> None:
    script = Path(sys.executable).with_name("mpp-proxy")
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    assert done.stdout.strip() == "mpp-proxy 0.1.0"


def test_demo_on_a_busy_port_says_which_flag_to_use() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_cli("demo", "--once", "--port", str(port))
    assert result.code == 1
    assert_one_clean_line(result.err)
    assert "already in use" in result.err and "--port" in result.err


def test_no_command_prints_help_and_exits_2() -> None:
    result = run_cli()
    assert result.code == 2
    assert "serve" in result.out and "demo" in result.out


@pytest.mark.parametrize("command", ["check", "serve"])
def test_routes_that_cannot_be_told_apart_are_a_config_error(command: str, tmp_path: Path) -> None:
    routes = '"GET /v1/:x" = "free"\n"GET /v1/:y" = "free"\n'
    path = write(tmp_path, minimal().replace('"GET /ping" = "free"\n', routes))
    port = ["--port", str(free_port())] if command == "serve" else []
    result = run_cli(command, "--config", path, *port)
    assert result.code == 2
    assert_one_clean_line(result.err)
    assert "can never be told apart" in result.err


@pytest.mark.parametrize("seconds", ["0", "-1", "nan", "inf", "soon"])
def test_pay_timeout_must_be_a_positive_number_of_seconds(
    seconds: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from mpp_proxy.cli import build_parser

    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["pay", "--timeout", seconds, "http://127.0.0.1:9/"])
    assert exit_info.value.code == 2
    assert "--timeout" in capsys.readouterr().err
