"""A local Tempo chain for payment tests: `anvil --network tempo`, funded payers, an RPC relay.

    with Anvil() as chain:                       # anvil on 127.0.0.1, a port the OS chose
        chain.url                                # the node itself
        chain.rpc_url                            # a relay in front of it (pympp's server side)
        chain.balance(address)                   # pathUSD balance, base units
        payer = chain.payer()                    # pays each challenge from a fresh account

`Anvil(chain_id=42431)` runs the node as Moderato's chain id, and the relay answers Moderato's
faucet call (`tempo_fundAddress`) by funding the address from a dev account, so commands written
for the testnet run against it.

Two anvil quirks with pympp 0.16.0 are handled here:
- pull mode (the client signs, the server broadcasts) sends `eth_sendRawTransactionSync` with a
  timeout as second parameter, anvil accepts only the transaction: the relay drops the extra one;
- anvil silently never mines a second payment signed by the same payer, so `payer()` signs
  every payment with a fresh account funded from a dev account first.

The binary comes from `make tools` (`.tools/node_modules/.bin/anvil`) or PATH; a missing
binary fails the test that asked for the chain, it is never skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from mpp import Challenge, Credential
from mpp.methods.tempo import TempoAccount
from mpp.methods.tempo import client as tempo_client
from mpp.runtime import ClientMethod, CredentialParams

__all__ = [
    "CHAIN_ID",
    "DEV_ACCOUNTS",
    "PATH_USD",
    "Anvil",
    "FreshPayer",
    "anvil_binary",
]

ROOT = Path(__file__).resolve().parents[2]
CHAIN_ID = 31337
# The TIP-20 stablecoin `anvil --network tempo` deploys at genesis (6 decimals).
PATH_USD = "0x20c0000000000000000000000000000000000000"
# anvil's well-known unlocked dev accounts (mnemonic "test test ... junk"); each holds 2**64-1
# base units of pathUSD. The first funds payers, the others are free for tests.
DEV_ACCOUNTS = (
    "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
    "0x70997970C51812dc3A010C7d01b50e0d17dc79C8",
    "0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC",
)
# What the emulated testnet faucet sends (1,000 pathUSD; the real one drips more tokens).
FAUCET_DRIP = 1_000_000_000
_TRANSFER = "0xa9059cbb"  # transfer(address,uint256)
_BALANCE_OF = "0x70a08231"  # balanceOf(address)
_LISTENING = re.compile(r"Listening on 127\.0\.0\.1:(\d+)")


def anvil_binary() -> str:
    """The anvil executable: `make tools` output first, then PATH; raise when neither has it."""
    local = ROOT / ".tools" / "node_modules" / ".bin" / "anvil"
    if local.exists():
        return str(local)
    found = shutil.which("anvil")
    if found is None:
        raise RuntimeError("anvil not found: run `make tools` (npm package @foundry-rs/anvil)")
    return found


def _word(value: int | str) -> str:
    if isinstance(value, str):
        return value.removeprefix("0x").lower().zfill(64)
    return format(value, "064x")


class _Relay(ThreadingHTTPServer):
    """JSON-RPC relay to anvil that makes pympp's pull-mode broadcast acceptable to it."""

    daemon_threads = True

    def __init__(self, target: str) -> None:
        super().__init__(("127.0.0.1", 0), _RelayHandler)
        self.target = target
        self.calls: list[str] = []
        self.lock = threading.Lock()
        # Broadcasts wait this long before reaching anvil (a slow node, for crash tests).
        self.hold = 0.0
        self.broadcast_seen = threading.Event()
        # tempo_fundAddress(address) -> transaction hashes, as the testnet faucet answers.
        self.faucet: Any = None


class _RelayHandler(BaseHTTPRequestHandler):
    server: _Relay
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        try:
            doc = json.loads(body)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and doc.get("method") == "tempo_fundAddress":
            self._reply(200, self._fund(doc))
            return
        broadcast = False
        if doc is not None:
            batch = doc if isinstance(doc, list) else [doc]
            for call in batch:
                if not isinstance(call, dict):
                    continue
                with self.server.lock:
                    self.server.calls.append(str(call.get("method")))
                params = call.get("params")
                if call.get("method") == "eth_sendRawTransactionSync" and isinstance(params, list):
                    call["params"] = params[:1]
                if str(call.get("method", "")).startswith("eth_sendRawTransaction"):
                    broadcast = True
            body = json.dumps(doc).encode()
        if broadcast:
            self.server.broadcast_seen.set()
            if self.server.hold:
                time.sleep(self.server.hold)
        request = urllib.request.Request(
            self.server.target,
            data=body,
            headers={"content-type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as answer:
                status, reply = answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            status, reply = exc.code, exc.read()
        except OSError:
            status, reply = 502, b'{"error":"anvil unreachable"}'
        self._reply(status, reply)

    def _fund(self, call: dict[str, Any]) -> bytes:
        params = call.get("params")
        address = params[0] if isinstance(params, list) and params else None
        if self.server.faucet is None or not isinstance(address, str):
            error = {"code": -32602, "message": "tempo_fundAddress takes one address"}
            return json.dumps({"jsonrpc": "2.0", "id": call.get("id"), "error": error}).encode()
        result = self.server.faucet(address)
        return json.dumps({"jsonrpc": "2.0", "id": call.get("id"), "result": result}).encode()

    def _reply(self, status: int, reply: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)


class Anvil:
    """`anvil --network tempo` on 127.0.0.1 and a rewriting relay in front of it."""

    def __init__(self, chain_id: int = CHAIN_ID) -> None:
        self.chain_id = chain_id
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._relay: _Relay | None = None
        self._relay_thread: threading.Thread | None = None
        self._fund_lock = threading.Lock()
        self._output: list[str] = []

    @property
    def url(self) -> str:
        """The node itself (push-mode clients, balance checks)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def rpc_url(self) -> str:
        """The relay: give this to the proxy (pympp's server broadcasts through it)."""
        assert self._relay is not None, "anvil is not running"
        return f"http://127.0.0.1:{self._relay.server_address[1]}"

    def hold_broadcasts(self, seconds: float) -> threading.Event:
        """Delay every broadcast through the relay; the event is set when the next one arrives.

        The transaction still reaches the node afterwards, even when its sender has gone.
        """
        assert self._relay is not None
        self._relay.broadcast_seen.clear()
        self._relay.hold = seconds
        return self._relay.broadcast_seen

    @property
    def relayed_calls(self) -> list[str]:
        assert self._relay is not None
        with self._relay.lock:
            return list(self._relay.calls)

    # ---------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 30.0) -> Anvil:
        cmd = [
            anvil_binary(),
            "--network",
            "tempo",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--chain-id",
            str(self.chain_id),
        ]
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            self.port = self._wait_listening(timeout)
            self._wait_rpc(timeout)
        except BaseException:
            self.stop()
            raise
        self._relay = _Relay(self.url)
        self._relay.faucet = lambda address: [self.fund(address, FAUCET_DRIP)]
        self._relay_thread = threading.Thread(
            target=self._relay.serve_forever, name="anvil-relay", daemon=True
        )
        self._relay_thread.start()
        return self

    def _wait_listening(self, timeout: float) -> int:
        assert self._proc is not None and self._proc.stdout is not None
        found: list[int] = []
        stdout = self._proc.stdout

        def read() -> None:
            for raw in stdout:
                line = raw.decode("utf-8", "replace")
                self._output.append(line)
                if len(self._output) > 200:
                    del self._output[:100]
                match = _LISTENING.search(line)
                if match and not found:
                    found.append(int(match.group(1)))

        # Keep draining the pipe for the node's whole life so it never blocks on a full pipe.
        threading.Thread(target=read, name="anvil-output", daemon=True).start()
        deadline = time.monotonic() + timeout
        while not found:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"anvil exited with {self._proc.returncode}: {''.join(self._output)[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"anvil did not start in {timeout}s")
            time.sleep(0.02)
        return found[0]

    def _wait_rpc(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if int(self.rpc("eth_chainId"), 16) == self.chain_id:
                    return
            except (httpx.HTTPError, RuntimeError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("anvil did not answer eth_chainId")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._relay is not None:
            self._relay.shutdown()
            self._relay.server_close()
            self._relay = None
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def __enter__(self) -> Anvil:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- chain access

    def rpc(self, method: str, *params: Any) -> Any:
        """One JSON-RPC call to the node; raises RuntimeError on a JSON-RPC error."""
        answer = httpx.post(
            self.url,
            json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)},
            timeout=30,
        )
        answer.raise_for_status()
        doc = answer.json()
        if "error" in doc:
            raise RuntimeError(f"{method}: {doc['error']}")
        return doc["result"]

    def balance(self, address: str, token: str = PATH_USD) -> int:
        """TIP-20 `balanceOf(address)` in base units."""
        data = _BALANCE_OF + _word(address)
        return int(self.rpc("eth_call", {"to": token, "data": data}, "latest"), 16)

    def receipt(self, tx_hash: str) -> dict[str, Any] | None:
        """`eth_getTransactionReceipt`, None while unknown."""
        found: dict[str, Any] | None = self.rpc("eth_getTransactionReceipt", tx_hash)
        return found

    def transfer_logs(self, tx_hash: str, token: str = PATH_USD) -> list[tuple[str, str, int]]:
        """(from, to, amount) of every TIP-20 Transfer event the transaction emitted."""
        topic = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
        receipt = self.receipt(tx_hash) or {}
        found = []
        for entry in receipt.get("logs", []):
            topics = entry.get("topics", [])
            if entry.get("address", "").lower() == token.lower() and topics[:1] == [topic]:
                found.append(
                    ("0x" + topics[1][-40:], "0x" + topics[2][-40:], int(entry["data"], 16))
                )
        return found

    def fund(self, address: str, amount: int, token: str = PATH_USD) -> str:
        """Send `amount` base units of `token` from the first dev account; the mined tx hash."""
        data = _TRANSFER + _word(address) + _word(amount)
        # One sender, sequential nonces: serialize so concurrent payers never race for one.
        with self._fund_lock:
            tx = self.rpc(
                "eth_sendTransaction", {"from": DEV_ACCOUNTS[0], "to": token, "data": data}
            )
        receipt = self.receipt(tx)
        if receipt is None or receipt.get("status") != "0x1":
            raise RuntimeError(f"funding {address} failed: {receipt}")
        return str(tx)

    def new_account(self, amount: int = 10_000_000) -> TempoAccount:
        """A fresh key holding `amount` base units of pathUSD (transfer plus fees)."""
        account = TempoAccount.from_key("0x" + os.urandom(32).hex())
        if amount:
            self.fund(account.address, amount)
        return account

    def payer(self, *, funding: int = 10_000_000) -> FreshPayer:
        """A pympp client method paying each Tempo challenge from a fresh, funded account."""
        return FreshPayer(self, funding)


@dataclass
class FreshPayer:
    """pympp's Tempo client (pull mode), one new funded account per payment.

    `method` goes into `PaymentTransport(methods=[payer.method])`; `credentials` and `payers`
    record what was signed, in order, so tests can replay a credential or check a balance.
    """

    chain: Anvil
    funding: int
    credentials: list[str] = field(default_factory=list)
    payers: list[str] = field(default_factory=list)

    @property
    def method(self) -> ClientMethod:
        from mpp.methods.tempo.schemas import charge as definition

        async def create_credential(params: CredentialParams) -> str:
            return await self.pay(params.challenge)

        return ClientMethod(method=definition, create_credential=create_credential)

    async def pay(self, challenge: Challenge) -> str:
        """The `Authorization` value paying this challenge (a signed, not yet sent transfer)."""
        account = await asyncio.to_thread(self.chain.new_account, self.funding)
        inner = tempo_client.charge(
            account=account, rpc_url=self.chain.url, chain_id=self.chain.chain_id
        )
        value = await inner.create_credential(CredentialParams(challenge=challenge))
        self.payers.append(account.address)
        self.credentials.append(value)
        return value

    async def pay_push(self, challenge: Challenge) -> str:
        """Push mode: broadcast the signed transfer ourselves, then present its hash."""
        account = await asyncio.to_thread(self.chain.new_account, self.funding)
        method = tempo_client.TempoMethod(
            account=account, rpc_url=self.chain.url, chain_id=self.chain.chain_id
        )
        signed = await method.create_credential(challenge)
        raw = signed.payload["signature"]
        tx_hash = await asyncio.to_thread(self.chain.rpc, "eth_sendRawTransaction", raw)
        deadline = time.monotonic() + 30
        while await asyncio.to_thread(self.chain.receipt, tx_hash) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"push payment {tx_hash} was never mined")
            await asyncio.sleep(0.05)
        value = Credential(
            challenge=signed.challenge,
            payload={"type": "hash", "hash": tx_hash},
            source=signed.source,
        ).to_authorization()
        self.payers.append(account.address)
        self.credentials.append(value)
        return value
