"""Idempotent retries across `mpp-proxy serve --workers 2`: the stored response is in the shared
SQLite state, so whichever worker takes a retry answers it the same way."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mpp_proxy.client.testmoney import pay_challenge
from tests.e2e.harness import REALM, SECRET, challenges
from tests.support.proxy_process import ProxyProcess
from tests.support.upstream import Upstream


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory, echo: Upstream) -> Iterator[ProxyProcess]:
    folder: Path = tmp_path_factory.mktemp("idem-workers")
    config = folder / "proxy.toml"
    config.write_text(
        textwrap.dedent(
            f"""\
            [proxy]
            secret_key = "${{E2E_SECRET}}"
            realm = "{REALM}"
            state = "sqlite:///{folder / "state.db"}"
            allow_test_payments = true

            [methods.play]
            kind = "test"

            [services.api]
            base_url = "{echo.url}"

            [services.api.routes]
            "POST /echo/*" = {{ price = "0.05" }}
            """
        )
    )
    server = ProxyProcess.serve(
        "--config", str(config), "--workers", "2", folder=folder, env={"E2E_SECRET": SECRET}
    ).start()
    try:
        yield server
    finally:
        server.stop()


def test_retries_on_fresh_connections_get_the_same_bytes_from_either_worker(
    workers: ProxyProcess, echo: Upstream
) -> None:
    url = workers.url + "/api/echo/job"
    body = b'{"job": 1}'
    credential = pay_challenge(challenges(httpx.post(url, content=body)))
    headers = {"authorization": credential, "idempotency-key": "job-1"}
    first = httpx.post(url, content=body, headers=headers)
    assert first.status_code == 200, first.text
    hits = echo.requests
    # One connection per retry: the two workers share them.
    answers = [httpx.post(url, content=body, headers=headers) for _ in range(8)]
    assert {a.status_code for a in answers} == {200}
    assert {a.content for a in answers} == {first.content}
    assert {a.headers["payment-receipt"] for a in answers} == {first.headers["payment-receipt"]}
    assert echo.requests == hits
    other = httpx.post(url, content=b'{"job": 2}', headers=headers)
    assert other.status_code == 422
