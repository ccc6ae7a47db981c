"""Paid requests through mpp-proxy: collect 402 challenges, pre-sign credentials, replay with wrk.

The credentials are made before the measured run so the load generator only sends them: wrk
measures the proxy's verify + forward path, each credential used once. wrk always runs for its
whole duration, so there are more credentials than the run can spend; should they run out, the
last one is replayed (403) and the run is flagged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from benchmarks.load import UsageMeter, wrk

if TYPE_CHECKING:
    from benchmarks.run import Bench, Target

# Signs the credential for a list of WWW-Authenticate values: (headers) -> Authorization value.
Signer = Callable[[list[str]], Awaitable[str]]

# A throwaway key: the EVM settle hook broadcasts nothing, so this key never holds funds.
EVM_PAYER_KEY = "0x" + "5a" * 32
EVM_RECIPIENT = "0x" + "42" * 20


async def collect_credentials(
    url: str, count: int, sign: Signer, concurrency: int = 32
) -> list[str]:
    """`count` Authorization values, each paying its own fresh 402 challenge for url."""
    credentials: list[str] = []
    remaining = count

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            async with session.get(url) as response:
                await response.read()
                if response.status != 402:
                    raise RuntimeError(f"expected 402 from {url}, got {response.status}")
                credentials.append(await sign(response.headers.getall("WWW-Authenticate")))

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return credentials


def replay_script(path: Path, credentials_file: Path) -> Path:
    """wrk lua: one credential per request, in order (the last one again once they run out)."""
    path.write_text(
        f"""
local creds = {{}}
for line in io.lines("{credentials_file}") do creds[#creds + 1] = line end
local i = 0
request = function()
  i = i + 1
  if i > #creds then i = #creds end
  return wrk.format("GET", nil, {{["Authorization"] = creds[i]}})
end
"""
    )
    return path


def paid_round_trips(
    bench: Bench, target: Target, name: str, sign: Signer, count: int
) -> dict[str, Any]:
    url = target.url("/paid")
    credentials = asyncio.run(collect_credentials(url, count, sign))
    cred_file = bench.work / f"{name}.credentials"
    cred_file.write_text("\n".join(credentials) + "\n")
    script = replay_script(bench.work / f"{name}.lua", cred_file)
    meter = UsageMeter({"server": [p for s in target.servers for p in s.tree()]})
    meter.start()
    result = wrk(url, 16, bench.plan.seconds, bench.load_pin, script)
    usage = meter.stop()
    row = result.as_dict()
    row.update(usage.as_dict())
    paid = result.requests - result.non_2xx
    row["credentials"] = count
    row["paid_requests"] = paid
    row["round_trips_per_s"] = round(paid / result.seconds, 1)
    row["server_cpu_us_per_request"] = round(1e6 * usage.cpu_s["server"] / max(1, paid), 1)
    if result.non_2xx:
        row["warning"] = (
            f"{result.non_2xx} paid requests were not 2xx "
            "(credentials ran out, expired or were refused): rate is a lower bound"
        )
    return row


def test_money_signer() -> Signer:
    from mpp_proxy.client.testmoney import pay_challenge

    async def sign(headers: list[str]) -> str:
        return pay_challenge(headers)

    return sign


def evm_signer() -> Signer:
    """pympp's EVM client signing EIP-3009 authorizations (ecrecover is the server's cost)."""
    from eth_account import Account
    from mpp import Challenge
    from mpp.client.transport import _payment_challenges
    from mpp.methods.evm import client as evm_client
    from mpp.methods.evm.assets import BASE_SEPOLIA_USDC
    from mpp.runtime import CredentialParams

    method = evm_client.charge(currency=BASE_SEPOLIA_USDC, account=Account.from_key(EVM_PAYER_KEY))

    async def sign(headers: list[str]) -> str:
        for value in headers:
            for text in _payment_challenges(value):
                challenge = Challenge.from_www_authenticate(text)
                if challenge.method == method.method.name:
                    return await method.create_credential(CredentialParams(challenge=challenge))
        raise RuntimeError("no EVM challenge in the 402")

    return sign


def evm_proxy_py(path: Path, upstream_port: int, service: str) -> Path:
    """A proxy.py whose only paid route takes EVM (USDC on Base Sepolia), settled by a no-op hook.

    Verification (EIP-712 hash, ecrecover, amount/recipient/route checks, replay claim) is the
    real pympp path; only the broadcast is replaced, as a facilitator would do it off-box.
    """
    path.write_text(
        f"""
from decimal import Decimal

from mpp.methods.evm.assets import BASE_SEPOLIA_USDC as ASSET
from mpp_proxy.config.model import (
    Config, EvmMethod, Price, ProxySettings, Route, Secret, Service,
)


async def settle(authorization):
    return "0x" + "00" * 32


config = Config(
    proxy=ProxySettings(
        secret_key=Secret("bench-only-secret-key-0123456789abcdef"),
        realm="bench.local",
        state="memory://",
    ),
    methods=(
        EvmMethod(
            name="usdc",
            currency=ASSET.address,
            recipient="{EVM_RECIPIENT}",
            chain_id=ASSET.chain_id,
            decimals=ASSET.decimals,
            settle=settle,
        ),
    ),
    services=(
        Service(
            id="{service}",
            base_url="http://127.0.0.1:{upstream_port}",
            routes=(
                Route(method="GET", pattern="/small"),
                Route(method="GET", pattern="/paid", price=Price(Decimal("0.01"), ("usdc",))),
            ),
        ),
    ),
    source="{path}",
)
"""
    )
    return path


def test_money_proxy_py(path: Path, upstream_port: int, service: str, settle: str) -> Path:
    """A proxy.py whose paid route takes test money, settled `settle` ("after" or "before")."""
    path.write_text(
        f"""
from decimal import Decimal

from mpp_proxy.config.model import (
    Config, Price, ProxySettings, Route, Secret, Service, TestMoneyMethod,
)

config = Config(
    proxy=ProxySettings(
        secret_key=Secret("bench-only-secret-key-0123456789abcdef"),
        realm="bench.local",
        state="memory://",
        allow_test_payments=True,
    ),
    methods=(TestMoneyMethod("play"),),
    services=(
        Service(
            id="{service}",
            base_url="http://127.0.0.1:{upstream_port}",
            routes=(
                Route(method="GET", pattern="/small"),
                Route(
                    method="GET",
                    pattern="/paid",
                    price=Price(Decimal("0.01"), ("play",)),
                    settle="{settle}",
                ),
            ),
        ),
    ),
    source="{path}",
)
"""
    )
    return path


def run_settle_timing(bench: Bench, count: int) -> dict[str, Any]:
    """Paid test-money requests settled after the upstream answered vs before forwarding, each
    proxy started fresh per round, rounds alternating so the machine's noise falls on both."""
    from benchmarks.run import SERVICE, start_mpp_with

    assert bench.upstream is not None
    rows: dict[str, list[dict[str, Any]]] = {"after": [], "before": []}
    for round_ in range(max(2, bench.plan.rounds)):
        for settle in ("after", "before") if round_ % 2 == 0 else ("before", "after"):
            name = f"paid_{settle}_{round_}"
            config = test_money_proxy_py(
                bench.work / f"{name}.py", bench.upstream.port, SERVICE, settle
            )
            target = start_mpp_with(bench, config, f"mpp-proxy-{settle}")
            try:
                rows[settle].append(
                    paid_round_trips(bench, target, name, test_money_signer(), count)
                )
            finally:
                target.servers[0].stop()
    best = {k: min(r["server_cpu_us_per_request"] for r in v) for k, v in rows.items()}
    rate = {k: max(r["round_trips_per_s"] for r in v) for k, v in rows.items()}
    return {
        "after": rows["after"],
        "before": rows["before"],
        "cpu_us_per_request": best,
        "paid_per_s": rate,
        "cpu_ratio_after_over_before": round(best["after"] / best["before"], 3),
        "rate_ratio_after_over_before": round(rate["after"] / rate["before"], 3),
    }


def run_paid(bench: Bench) -> None:
    from benchmarks.run import SERVICE, start_mpp_with

    assert bench.upstream is not None
    count = 30_000 if bench.plan.full else 12_000
    scenarios = bench.results["scenarios"]
    try:
        row = paid_round_trips(bench, bench.targets["mpp"], "paid_test", test_money_signer(), count)
        scenarios["paid_test"] = row
        print(f"  paid_test: {row['round_trips_per_s']} paid requests/s")
    except Exception as exc:
        bench.not_run["paid_test"] = f"failed: {exc}"
    # EVM verification costs milliseconds (ecrecover): fewer credentials suffice.
    try:
        config = evm_proxy_py(bench.work / "proxy_evm.py", bench.upstream.port, SERVICE)
        target = start_mpp_with(bench, config, "mpp-proxy-evm")
        try:
            row = paid_round_trips(bench, target, "paid_evm", evm_signer(), count // 4)
        finally:
            target.servers[0].stop()
        scenarios["paid_evm"] = row
        print(f"  paid_evm: {row['round_trips_per_s']} paid requests/s")
    except Exception as exc:
        bench.not_run["paid_evm"] = f"failed: {str(exc)[:300]}"
    try:
        timing = run_settle_timing(bench, count // 2)
        scenarios["paid_settle_timing"] = timing
        print(
            f"  paid_settle_timing: CPU/request after {timing['cpu_us_per_request']['after']} us,"
            f" before {timing['cpu_us_per_request']['before']} us"
            f" (after/before {timing['cpu_ratio_after_over_before']}x)"
        )
    except Exception as exc:
        bench.not_run["paid_settle_timing"] = f"failed: {str(exc)[:300]}"
