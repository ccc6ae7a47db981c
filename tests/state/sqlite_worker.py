"""A separate OS process acting on a SQLite state file, driven by test_sqlite_processes.py.

usage: sqlite_worker.py race URL OWNER ROWS START_AT
           claim every row k0..k{ROWS-1} (credited -> in_flight) and insert n0..n{ROWS-1},
           ascending for owner A, descending otherwise (so the two meet mid-way);
           prints one JSON line {"claimed": [...], "inserted": [...], "errors": [...]}
       sqlite_worker.py count URL OWNER WINS START_AT
           compare-and-swap row "counter" (owner is the version) until WINS increments
           succeeded; prints {"wins": N, "lost": N, "errors": [...]}
       sqlite_worker.py hold URL
           writes an in_flight row "held" and a delivered row "done", prints "ready", then
           waits to be killed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from mpp_proxy.state import Payment, PaymentStatus, open_store


def row(key: str, status: PaymentStatus, owner: str) -> Payment:
    now = time.time()
    return Payment(
        key=key,
        challenge_id="ch",
        method="usdc",
        kind="tempo",
        reference="",
        amount="1000",
        currency="0x20c0",
        service="svc",
        route="POST /x",
        scope="POST /svc/x",
        payer="",
        status=status,
        owner=owner,
        lease_until=now + 30,
        credit_until=0.0,
        attempts=1,
        created_at=now,
        updated_at=now,
    )


async def race(url: str, owner: str, rows: int, start_at: float) -> None:
    store = open_store(url)
    await store.open()
    claimed: list[str] = []
    inserted: list[str] = []
    errors: list[str] = []
    while time.time() < start_at:
        await asyncio.sleep(0.001)
    order = range(rows) if owner == "A" else range(rows - 1, -1, -1)
    for i in order:
        try:
            won = await store.transition(
                f"k{i}",
                expect=(PaymentStatus.CREDITED,),
                status=PaymentStatus.IN_FLIGHT,
                owner=owner,
            )
            if won is not None:
                claimed.append(f"k{i}")
            if await store.insert_payment(row(f"n{i}", PaymentStatus.IN_FLIGHT, owner)) is None:
                inserted.append(f"n{i}")
        except Exception as err:
            errors.append(f"{type(err).__name__}: {err}")
    await store.close()
    print(json.dumps({"claimed": claimed, "inserted": inserted, "errors": errors}), flush=True)


async def count(url: str, owner: str, wins: int, start_at: float) -> None:
    store = open_store(url)
    await store.open()
    won = lost = 0
    errors: list[str] = []
    while time.time() < start_at:
        await asyncio.sleep(0.001)
    while won < wins and len(errors) < 10:
        try:
            cur = await store.get_payment("counter")
            assert cur is not None
            done = await store.transition(
                "counter",
                expect=(PaymentStatus.IN_FLIGHT,),
                status=PaymentStatus.IN_FLIGHT,
                expect_owner=cur.owner,
                owner=f"{owner}:{won}",
                attempts=cur.attempts + 1,
            )
            if done is None:
                lost += 1
            else:
                won += 1
        except Exception as err:
            errors.append(f"{type(err).__name__}: {err}")
    await store.close()
    print(json.dumps({"wins": won, "lost": lost, "errors": errors}), flush=True)


async def hold(url: str) -> None:
    store = open_store(url)
    await store.open()
    await store.insert_payment(row("held", PaymentStatus.IN_FLIGHT, "doomed"))
    await store.insert_payment(row("done", PaymentStatus.IN_FLIGHT, "doomed"))
    await store.transition(
        "done",
        expect=(PaymentStatus.IN_FLIGHT,),
        status=PaymentStatus.DELIVERED,
        owner="",
        reference="0xfeed",
    )
    await store.put_if_absent("replay-key", "0xfeed")
    print("ready", flush=True)
    await asyncio.sleep(3600)


def main(argv: list[str]) -> None:
    if argv[1] == "race":
        asyncio.run(race(argv[2], argv[3], int(argv[4]), float(argv[5])))
    elif argv[1] == "count":
        asyncio.run(count(argv[2], argv[3], int(argv[4]), float(argv[5])))
    elif argv[1] == "hold":
        asyncio.run(hold(argv[2]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
