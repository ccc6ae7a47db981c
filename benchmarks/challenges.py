"""402 issuance: PaymentGate.authorize (no credential) against pympp's per-request route handler.

Run: .venv/bin/python -m benchmarks.challenges [--repeats 15] [--requests 2000]

Both sides answer the same unpaid request for the same route, price and method (one offer per
run, then all four on one route): pympp as `handler(mpp.server.Request(...))` -> PaymentRequired,
the handler built once per route like a framework integration would; ours as the whole
`gate.authorize(PaidRequest)` -> Problem, header reading and Accept-Payment ranking included.
Figures are medians of interleaved repeats, in microseconds per 402. Also measured: one paid
verification per method (test money, EVM with a local settle hook), ours against pympp's handler.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from mpp.server.http import PaymentRequired, PaymentVerified, Request

from mpp_proxy.config.model import (
    Config,
    EvmMethod,
    PaymentMethod,
    Price,
    ProxySettings,
    Route,
    Secret,
    Service,
    StripeMethod,
    TempoMethod,
    TestMoneyMethod,
)
from mpp_proxy.payments import PaidRequest, PaymentGate
from mpp_proxy.problems import Problem
from mpp_proxy.state import open_store

TARGET_RATIO = 5.0
PATH = "/openai/v1/chat/completions"
QUERY = "api-version=2026-01-01"
URL = "http://api.example.com" + PATH + "?" + QUERY
PAYER_KEY = "0x" + "5" * 64
USDC = "0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913"  # USDC on Base (a known EIP-3009 asset)
RECIPIENT = "0x742d35Cc6634c0532925a3b844bC9e7595F8fE00"

METHODS: dict[str, PaymentMethod] = {
    "test": TestMoneyMethod("play"),
    "tempo": TempoMethod(
        "usdc",
        recipient=RECIPIENT,
        currency="0x20C000000000000000000000b9537d11c60E8b50",
    ),
    "stripe": StripeMethod("card", secret_key=Secret("sk_test_bench"), network_id="bn_bench"),
    "evm": EvmMethod(
        "base", currency=USDC, recipient=RECIPIENT, chain_id=8453, settle=lambda a: "0x" + "a" * 64
    ),
}


def config(names: tuple[str, ...]) -> Config:
    route = Route("POST", "/v1/chat/completions", Price(Decimal("0.05"), names), "Chat")
    return Config(
        proxy=ProxySettings(
            secret_key=Secret("bench-secret-" + "x" * 32),
            realm="api.example.com",
            state="memory://",
            allow_test_payments=True,
        ),
        methods=tuple(METHODS.values()),
        services=(Service(id="openai", base_url="http://127.0.0.1:9", routes=(route,)),),
    )


def _headers() -> list[tuple[bytes, bytes]]:
    return [
        (b"host", b"api.example.com"),
        (b"content-type", b"application/json"),
        (b"user-agent", b"bench/1"),
    ]


async def _time(fn: Callable[[], Awaitable[Any]], n: int) -> float:
    gc.collect()
    start = time.perf_counter()
    for _ in range(n):
        await fn()
    return (time.perf_counter() - start) / n * 1e6


async def issuance(names: tuple[str, ...], requests: int, repeats: int) -> tuple[float, float]:
    """(pympp µs, ours µs) per 402 for a route offering `names`."""
    store = open_store("memory://")
    await store.open()
    cfg = config(tuple(METHODS[n].name for n in names))
    gate = PaymentGate(cfg, store)
    service = cfg.services[0]
    route = service.routes[0]
    handler = gate.pympp_handler(service, route)
    req = PaidRequest.of(gate.offers_for(service, route), "POST", PATH, QUERY, _headers())
    headers = {"content-type": "application/json", "user-agent": "bench/1"}

    async def theirs() -> None:
        result = await handler(Request("POST", URL, headers=headers))
        assert isinstance(result, PaymentRequired) and result.status == 402

    async def ours() -> None:
        result = await gate.authorize(req)
        assert isinstance(result, Problem) and result.status == 402

    await theirs()
    await ours()
    a: list[float] = []
    b: list[float] = []
    for _ in range(repeats):
        a.append(await _time(theirs, requests))
        b.append(await _time(ours, requests))
    await gate.close()
    return statistics.median(a), statistics.median(b)


async def verification(name: str, count: int) -> tuple[float, float]:
    """(pympp µs, ours µs) per paid request (verify + settle + ledger for ours)."""
    store = open_store("memory://")
    await store.open()
    cfg = config((METHODS[name].name,))
    gate = PaymentGate(cfg, store)
    service = cfg.services[0]
    route = service.routes[0]
    handler = gate.pympp_handler(service, route)
    sign = _signer(name)
    req = PaidRequest.of(gate.offers_for(service, route), "POST", PATH, QUERY, _headers())

    async def credentials() -> list[str]:
        out = []
        for _ in range(count):
            denial = await gate.authorize(req)
            assert isinstance(denial, Problem)
            out.append(
                await sign([v.decode() for k, v in denial.headers if k == b"www-authenticate"])
            )
        return out

    theirs_creds = await credentials()
    ours_creds = await credentials()
    start = time.perf_counter()
    for c in theirs_creds:
        result = await handler(Request("POST", URL, headers={"Authorization": c}))
        assert isinstance(result, PaymentVerified), result
    theirs = (time.perf_counter() - start) / count * 1e6
    start = time.perf_counter()
    for c in ours_creds:
        auth = await gate.authorize(
            PaidRequest.of(
                gate.offers_for(service, route),
                "POST",
                PATH,
                QUERY,
                [(b"authorization", c.encode())],
            )
        )
        assert not isinstance(auth, Problem), auth.body
        await auth.delivered()
    ours = (time.perf_counter() - start) / count * 1e6
    await gate.close()
    return theirs, ours


def _signer(name: str) -> Callable[[list[str]], Awaitable[str]]:
    from mpp import Challenge
    from mpp.runtime import CredentialParams

    if name == "test":
        from mpp_proxy.client.testmoney import client_method

        method = client_method()
    else:
        from eth_account import Account
        from mpp.methods.evm import client as evm
        from mpp.methods.evm.assets import BASE_USDC

        method = evm.charge(currency=BASE_USDC, account=Account.from_key(PAYER_KEY))

    async def sign(values: list[str]) -> str:
        challenge = Challenge.from_www_authenticate(values[0])
        return await method.create_credential(CredentialParams(challenge=challenge))

    return sign


async def main(requests: int, repeats: int, verify_count: int) -> int:
    print(f"402 issuance, µs per response (median of {repeats} x {requests})")
    print(f"{'offers':<26} {'pympp handler':>14} {'PaymentGate':>12} {'ratio':>7}")
    worst = float("inf")
    cases: list[tuple[str, ...]] = [(n,) for n in METHODS] + [tuple(METHODS)]
    for names in cases:
        theirs, ours = await issuance(names, requests, repeats)
        ratio = theirs / ours
        worst = min(worst, ratio)
        print(f"{'+'.join(names):<26} {theirs:>14.1f} {ours:>12.1f} {ratio:>6.1f}x")
    print(f"\npaid verification, µs per request ({verify_count} each; ours includes the ledger)")
    print(f"{'method':<26} {'pympp handler':>14} {'PaymentGate':>12}")
    for name in ("test", "evm"):
        theirs, ours = await verification(name, verify_count)
        print(f"{name:<26} {theirs:>14.1f} {ours:>12.1f}")
    ok = worst >= TARGET_RATIO
    verdict = "ok" if ok else "FAIL"
    print(f"\nworst issuance ratio {worst:.1f}x (target >= {TARGET_RATIO:.0f}x): {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--verify", type=int, default=200)
    args = parser.parse_args()
    raise SystemExit(asyncio.run(main(args.requests, args.repeats, args.verify)))
