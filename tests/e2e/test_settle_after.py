"""Settling after the upstream answered, on a local Tempo chain and with EVM: a failure before
settlement charges nothing, a success settles once, and kill -9 at each point loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mpp import Challenge
from mpp.methods.tempo import client as tempo_client
from mpp.runtime import CredentialParams

from mpp_proxy.state.base import Payment
from tests.e2e.harness import (
    PRICE,
    PRICE_BASE,
    REALM,
    SECRET,
    TEMPO_RECIPIENT,
    challenges,
    ledger,
    receipt,
    slug,
    wait_for,
)
from tests.e2e.parties import Deployment, Wallet
from tests.e2e.test_tempo_chain import _tempo_challenge
from tests.support.anvil import CHAIN_ID, PATH_USD, Anvil
from tests.support.proxy_process import ProxyProcess
from tests.support.upstream import Upstream


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def tempo_toml(state: str, echo_url: str, rpc_url: str, lease: float) -> str:
    """One Tempo method, each method's own timing (after), a short read timeout, a dead host."""
    return textwrap.dedent(
        f"""\
        [proxy]
        secret_key = "${{E2E_SECRET}}"
        realm = "{REALM}"
        state = "{state}"
        lease_seconds = {lease}

        [methods.usd]
        kind = "tempo"
        recipient = "{TEMPO_RECIPIENT}"
        currency = "{PATH_USD}"
        chain_id = {CHAIN_ID}
        rpc_url = "{rpc_url}"

        [services.api]
        base_url = "{echo_url}"
        timeouts = {{ read = 1.5 }}

        [services.api.routes]
        "GET /echo/*" = {{ price = "{PRICE}" }}
        "GET /status/:code" = {{ price = "{PRICE}" }}
        "GET /sleep" = {{ price = "{PRICE}" }}
        "GET /fail-once" = {{ price = "{PRICE}" }}

        [services.down]
        base_url = "http://127.0.0.1:{_closed_port()}"

        [services.down.routes]
        "GET /*" = {{ price = "{PRICE}" }}
        """
    )


class TempoProxy:
    def __init__(self, folder: Path, chain: Anvil, echo: Upstream, lease: float) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.state = f"sqlite:///{folder / 'state.db'}"
        config = folder / "proxy.toml"
        config.write_text(tempo_toml(self.state, echo.url, chain.rpc_url, lease))
        self.server = ProxyProcess.granian(
            "mpp_proxy:app", folder=folder, config=config, env={"E2E_SECRET": SECRET}
        )

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module")
def tempo_after(
    tmp_path_factory: pytest.TempPathFactory, chain: Anvil, echo: Upstream
) -> Iterator[TempoProxy]:
    served = TempoProxy(tmp_path_factory.mktemp("tempo-after"), chain, echo, lease=1.0)
    served.server.start()
    try:
        yield served
    finally:
        served.server.stop()


def rows_of(state: str, scope: str) -> list[Payment]:
    return [p for p in ledger(state) if p.scope == scope]


def settled_rows(state: str) -> list[Payment]:
    return [p for p in ledger(state) if p.reference]


def paid_get(url: str, credential: str, timeout: float = 30) -> httpx.Response:
    return httpx.get(url, headers={"authorization": credential}, timeout=timeout)


# ------------------------------------------------------------------------------ Tempo


def test_a_tempo_success_settles_once_on_chain_with_the_receipt(
    tempo_after: TempoProxy, chain: Anvil, wallet: Wallet, echo: Upstream
) -> None:
    url = tempo_after.url + "/api/echo/ok"
    credential = wallet.pay("tempo", challenges(httpx.get(url)))
    before = chain.balance(TEMPO_RECIPIENT)

    r = paid_get(url, credential)

    assert r.status_code == 200, r.text
    reference = receipt(r)["reference"]
    assert (chain.receipt(reference) or {}).get("status") == "0x1"
    assert chain.balance(TEMPO_RECIPIENT) - before == PRICE_BASE
    assert wait_for(
        lambda: [p.status for p in rows_of(tempo_after.state, "GET /api/echo/ok")] == ["delivered"]
    )
    again = paid_get(url, credential)
    assert again.status_code == 403
    assert chain.balance(TEMPO_RECIPIENT) - before == PRICE_BASE


@pytest.mark.parametrize(
    ("path", "status", "reason"),
    [
        ("/api/status/500", 500, "upstream-status"),
        ("/api/sleep?s=3", 504, "upstream-timeout"),
    ],
)
def test_an_upstream_failure_before_settlement_leaves_the_tempo_balance_unchanged(
    tempo_after: TempoProxy, chain: Anvil, wallet: Wallet, path: str, status: int, reason: str
) -> None:
    url = tempo_after.url + path
    credential = wallet.pay("tempo", challenges(httpx.get(url)))
    payer = wallet.tempo.payers[-1]
    before, paid_before = chain.balance(TEMPO_RECIPIENT), chain.balance(payer)

    r = paid_get(url, credential)

    assert r.status_code == status, r.text
    assert slug(r) == "payment-not-charged" and r.json()["reason"] == reason
    assert "payment-receipt" not in r.headers
    assert (chain.balance(TEMPO_RECIPIENT), chain.balance(payer)) == (before, paid_before)
    [row] = rows_of(tempo_after.state, "GET " + path)
    assert (row.status, row.reference) == ("released", "")


def test_an_unreachable_upstream_is_502_before_the_tempo_credential_is_read(
    tempo_after: TempoProxy, chain: Anvil, wallet: Wallet
) -> None:
    # The paid request takes its upstream connection at admit, before the pay stage.
    url = tempo_after.url + "/down/x"
    credential = wallet.pay("tempo", challenges(httpx.get(url)))
    payer = wallet.tempo.payers[-1]
    before, paid_before = chain.balance(TEMPO_RECIPIENT), chain.balance(payer)

    r = paid_get(url, credential)

    assert r.status_code == 502, r.text
    assert slug(r) == "upstream-unreachable"
    assert "payment-receipt" not in r.headers
    assert (chain.balance(TEMPO_RECIPIENT), chain.balance(payer)) == (before, paid_before)
    assert rows_of(tempo_after.state, "GET /down/x") == []


def test_a_released_tempo_credential_pays_on_the_retry_that_succeeds(
    tempo_after: TempoProxy, chain: Anvil, wallet: Wallet
) -> None:
    url = tempo_after.url + "/api/fail-once?key=tempo-after-retry"
    credential = wallet.pay("tempo", challenges(httpx.get(url)))
    before = chain.balance(TEMPO_RECIPIENT)
    failed = paid_get(url, credential)
    assert failed.status_code == 503 and slug(failed) == "payment-not-charged"
    assert chain.balance(TEMPO_RECIPIENT) == before

    ok = paid_get(url, credential)

    assert ok.status_code == 200, ok.text
    assert (chain.receipt(receipt(ok)["reference"]) or {}).get("status") == "0x1"
    assert chain.balance(TEMPO_RECIPIENT) - before == PRICE_BASE
    scope = "GET /api/fail-once?key=tempo-after-retry"
    assert wait_for(
        lambda: (
            [(p.status, p.attempts) for p in rows_of(tempo_after.state, scope)]
            == [("delivered", 2)]
        )
    )


def _funded_credential(chain: Anvil, challenge: Challenge) -> tuple[str, str]:
    """A pull-mode credential from a fresh account holding just enough; (credential, address)."""
    account = chain.new_account(PRICE_BASE + 200_000)
    method = tempo_client.charge(account=account, rpc_url=chain.url, chain_id=CHAIN_ID)
    value = asyncio.run(method.create_credential(CredentialParams(challenge=challenge)))
    return value, account.address


def _drain(chain: Anvil, payer: str) -> str:
    """Send as much of the payer's pathUSD elsewhere as its fee allows; the transaction hash.

    The node wants the transaction's largest possible fee on hand, not its actual one, so the
    amount is lowered until the node takes it."""
    # An impersonated sender is checked against its native balance too: give it some.
    chain.rpc("anvil_setBalance", payer, hex(10**21))
    balance = chain.balance(payer)
    for margin in range(5_000, PRICE_BASE, 5_000):
        data = "0xa9059cbb" + "00" * 12 + "ab" * 20 + format(balance - margin, "064x")
        try:
            tx = chain.rpc("eth_sendTransaction", {"from": payer, "to": PATH_USD, "data": data})
        except RuntimeError as exc:
            if "Insufficient funds" not in str(exc):
                raise
            continue
        assert chain.balance(payer) < PRICE_BASE
        return str(tx)
    raise AssertionError("the payer's fee never fit below the price")


def test_a_payer_who_spends_the_funds_before_settlement_gets_402_and_settle_failed(
    tempo_after: TempoProxy, chain: Anvil, echo: Upstream
) -> None:
    url = tempo_after.url + "/api/sleep?s=1"
    credential, payer = _funded_credential(chain, _tempo_challenge(httpx.get(url)))
    before = chain.balance(TEMPO_RECIPIENT)
    hits = echo.requests
    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(paid_get(url, credential)))
    thread.start()
    assert wait_for(lambda: echo.requests > hits, timeout=20), "never forwarded"
    # While the upstream works, the payer moves its money elsewhere (a second transaction).
    chain.rpc("anvil_impersonateAccount", payer)
    tx = _drain(chain, payer)
    assert (chain.receipt(tx) or {}).get("status") == "0x1"
    thread.join(30)

    [r] = answers
    assert r.status_code == 402, r.text
    assert "payment-receipt" not in r.headers and "slept" not in r.text
    assert challenges(r), "a fresh challenge to pay instead"
    [row] = rows_of(tempo_after.state, "GET /api/sleep?s=1")
    assert row.status == "settle_failed"
    assert chain.balance(TEMPO_RECIPIENT) == before


# ------------------------------------------------------------------------------ kill -9


@pytest.fixture
def crashable(tmp_path: Path, chain: Anvil, echo: Upstream) -> Iterator[TempoProxy]:
    served = TempoProxy(tmp_path / "crash", chain, echo, lease=1.0)
    served.server.start()
    try:
        yield served
    finally:
        chain.hold_broadcasts(0)
        served.server.stop()


def _held(url: str, credential: str) -> threading.Thread:
    def run() -> None:
        with contextlib.suppress(httpx.HTTPError):
            paid_get(url, credential)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _restart(served: TempoProxy) -> None:
    time.sleep(1.2)  # the dead process's leases run out
    served.server.start()


def test_kill_9_after_validation_before_settlement_charges_nothing(
    crashable: TempoProxy, chain: Anvil, wallet: Wallet, echo: Upstream
) -> None:
    url = crashable.url + "/api/sleep?s=3"
    credential = wallet.pay("tempo", challenges(httpx.get(url)))
    before, hits = chain.balance(TEMPO_RECIPIENT), echo.requests
    thread = _held(url, credential)
    assert wait_for(lambda: echo.requests > hits, timeout=20)
    [row] = ledger(crashable.state)
    assert (row.status, row.reference) == ("pending", "")

    crashable.server.kill9()
    thread.join(30)
    assert chain.balance(TEMPO_RECIPIENT) == before
    _restart(crashable)

    [row] = ledger(crashable.state)
    assert (row.status, row.reference) == ("released", "")  # swept: nothing was charged
    assert settled_rows(crashable.state) == []
    retried = paid_get(url.replace("s=3", "s=3"), credential)
    assert retried.status_code == 504  # the same request times out again: still uncharged
    assert chain.balance(TEMPO_RECIPIENT) == before


def test_kill_9_after_the_upstream_head_while_broadcasting_keeps_a_credit(
    crashable: TempoProxy, chain: Anvil, wallet: Wallet, echo: Upstream
) -> None:
    url = crashable.url + "/api/echo/broadcast"
    credential = wallet.pay("tempo", challenges(httpx.get(url)))
    before, hits = chain.balance(TEMPO_RECIPIENT), echo.requests
    arrived = chain.hold_broadcasts(1.5)
    thread = _held(url, credential)
    assert arrived.wait(30), "the proxy never broadcast the payment"
    assert echo.requests - hits == 1  # the upstream answered first
    [row] = ledger(crashable.state)
    assert (row.status, row.reference) == ("in_flight", "")  # settling: marked before sending

    crashable.server.kill9()
    thread.join(30)
    assert wait_for(lambda: chain.balance(TEMPO_RECIPIENT) - before == PRICE_BASE, 15)
    chain.hold_broadcasts(0)
    _restart(crashable)
    [row] = ledger(crashable.state)
    assert row.status == "credited", row  # settled and undelivered: a credit record

    retried = paid_get(url, credential)

    assert retried.status_code == 200, retried.text
    reference = receipt(retried)["reference"]
    assert (chain.receipt(reference) or {}).get("status") == "0x1"
    assert chain.balance(TEMPO_RECIPIENT) - before == PRICE_BASE  # charged once
    assert wait_for(lambda: [p.status for p in ledger(crashable.state)] == ["delivered"])


def test_kill_9_after_settling_and_its_ledger_write_keeps_a_credit_redeemed_once(
    crashable: TempoProxy, chain: Anvil, wallet: Wallet, echo: Upstream
) -> None:
    # The upstream sends its head, then holds the body: settled, recorded, head sent.
    url = crashable.url + "/api/sleep?s=1.2&body=1"
    credential = wallet.pay("tempo", challenges(httpx.get(url)))
    before = chain.balance(TEMPO_RECIPIENT)
    thread = _held(url, credential)
    assert wait_for(lambda: bool(settled_rows(crashable.state)), timeout=30)
    [row] = ledger(crashable.state)
    assert row.status == "in_flight" and row.reference

    crashable.server.kill9()
    thread.join(30)
    _restart(crashable)
    [row] = ledger(crashable.state)
    assert (row.status, bool(row.reference)) == ("credited", True)

    retried = paid_get(url, credential)

    assert retried.status_code == 200, retried.text
    assert receipt(retried)["reference"] == row.reference
    assert chain.balance(TEMPO_RECIPIENT) - before == PRICE_BASE
    assert wait_for(lambda: [p.status for p in ledger(crashable.state)] == ["delivered"])
    assert paid_get(url, credential).status_code == 403


# ------------------------------------------------------------------------------ EVM


def _evm_settled(served: Deployment) -> int:
    try:
        return len(served.settled.read_text().splitlines())
    except FileNotFoundError:
        return 0


def test_evm_settles_only_after_success_and_once(
    after_proxy: Deployment, wallet: Wallet, echo: Upstream
) -> None:
    with httpx.Client(base_url=after_proxy.url, timeout=30) as client:
        failing = wallet.pay("evm", challenges(client.get("/api/status/evm/500")))
        settled = _evm_settled(after_proxy)
        r = client.get("/api/status/evm/500", headers={"authorization": failing})
        assert r.status_code == 500 and slug(r) == "payment-not-charged"
        assert _evm_settled(after_proxy) == settled  # the settle hook never ran

        credential = wallet.pay("evm", challenges(client.get("/api/echo/evm/a")))
        ok = client.get("/api/echo/evm/a", headers={"authorization": credential})
        assert ok.status_code == 200 and receipt(ok)["method"] == "evm"
        assert _evm_settled(after_proxy) == settled + 1
        again = client.get("/api/echo/evm/a", headers={"authorization": credential})
        assert again.status_code == 403
        assert _evm_settled(after_proxy) == settled + 1


def test_twenty_concurrent_requests_with_one_pending_credential_reach_the_upstream_once(
    after_proxy: Deployment, wallet: Wallet, echo: Upstream
) -> None:
    path = "/api/echo/evm/b"
    credential = wallet.pay("evm", challenges(httpx.get(after_proxy.url + path)))
    hits = echo.requests

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=20)
        async with httpx.AsyncClient(base_url=after_proxy.url, timeout=60, limits=limits) as c:
            return await asyncio.gather(
                *(c.get(path, headers={"authorization": credential}) for _ in range(20))
            )

    codes = sorted(r.status_code for r in asyncio.run(burst()))
    assert codes.count(200) == 1, codes
    assert set(codes) <= {200, 403, 409}, codes
    assert echo.requests - hits == 1
