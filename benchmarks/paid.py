"""Paid requests through mpp-proxy: collect 402 challenges, pre-sign credentials, replay with wrk.

The credentials are made before the measured run so the load generator only sends them: wrk
measures the proxy's verify + forward path, each credential used once. wrk always runs for its
whole duration, so there are more credentials than the run can spend; should they run out, the
last one is replayed (403) and the run is flagged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from benchmarks.load import UsageMeter, wrk

if TYPE_CHECKING:
    from benchmarks.run import Bench

# Signs the credential for a list of WWW-Authenticate values: (headers) -> Authorization value.
Signer = Callable[[list[str]], str]


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
                credentials.append(sign(response.headers.getall("WWW-Authenticate")))

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


def paid_round_trips(bench: Bench, name: str, sign: Signer, count: int) -> dict[str, Any]:
    assert bench.upstream is not None
    target = bench.targets["mpp"]
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
    from mpp_proxy.payments.testmoney import pay_challenge

    return lambda headers: pay_challenge(headers)


def run_paid(bench: Bench) -> None:
    count = 30_000 if bench.plan.full else 12_000
    scenarios = bench.results["scenarios"]
    try:
        scenarios["paid_test"] = paid_round_trips(bench, "paid_test", test_money_signer(), count)
        print(f"  paid_test: {scenarios['paid_test']}")
    except Exception as exc:
        bench.not_run["paid_test"] = f"failed: {exc}"
    bench.not_run.setdefault(
        "paid_evm",
        "EVM settles through a facilitator (or a Python settle hook); no offline facilitator "
        "in the bench yet",
    )
