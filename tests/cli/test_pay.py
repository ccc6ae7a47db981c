"""`mpp-proxy pay` as a plain client: output split, argument errors, unreachable servers."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from cli_harness import run_cli

from tests.support.ports import closed_port
from tests.support.upstream import Upstream


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


def test_a_free_url_prints_the_body_on_stdout_and_the_status_on_stderr(upstream: Upstream) -> None:
    result = run_cli("pay", f"{upstream.url}/echo/hello?x=1", "-H", "X-Trace: abc")
    assert result.code == 0, result.err
    echoed = json.loads(result.out)
    assert echoed["path"] == "/echo/hello"
    assert ["x-trace", "abc"] in echoed["headers"]
    assert "< 200 OK" in result.err


def test_data_makes_a_json_post(upstream: Upstream) -> None:
    result = run_cli("pay", f"{upstream.url}/echo", "-d", '{"q": 1}')
    assert result.code == 0, result.err
    echoed = json.loads(result.out)
    assert echoed["method"] == "POST"
    assert echoed["body"] == '{"q": 1}'
    assert ["content-type", "application/json"] in echoed["headers"]


def test_an_error_status_exits_1(upstream: Upstream) -> None:
    result = run_cli("pay", f"{upstream.url}/status/503")
    assert result.code == 1
    assert "< 503 Service Unavailable" in result.err


def test_connection_refused_is_one_line() -> None:
    result = run_cli("pay", f"http://127.0.0.1:{closed_port()}/x")
    assert result.code == 1
    assert result.err.startswith("> GET")
    assert result.err.splitlines()[-1].startswith("mpp-proxy: cannot connect to")
    assert "Traceback" not in result.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-amount", "lots"], "--max-amount 'lots' is not a decimal number"),
        (["-H", "no-colon"], "is not 'Name: value'"),
    ],
)
def test_bad_arguments_exit_2(args: list[str], message: str) -> None:
    result = run_cli("pay", "http://127.0.0.1:9/x", *args)
    assert result.code == 2
    assert message in result.err


def test_a_malformed_private_key_is_never_echoed() -> None:
    result = run_cli("pay", "http://127.0.0.1:9/x", env={"MPP_PRIVATE_KEY": "0xNOTAKEYzq4"})
    assert result.code == 2
    assert "MPP_PRIVATE_KEY is not a valid private key" in result.err
    assert "zq4" not in result.err
