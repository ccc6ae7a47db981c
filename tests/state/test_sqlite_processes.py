"""SQLite across OS processes: races decided by the database, commits surviving kill -9."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from mpp_proxy.state import Payment, PaymentStatus, open_store

WORKER = str(Path(__file__).with_name("sqlite_worker.py"))
REPO = str(Path(__file__).resolve().parents[2])
ROWS = 150


def _spawn(*args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.Popen(
        [sys.executable, WORKER, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _seed_credits(url: str) -> None:
    from sqlite_worker import row  # the worker's row shape, so both sides agree

    async def main() -> None:
        store = open_store(url)
        await store.open()
        for i in range(ROWS):
            credited = replace(
                row(f"k{i}", PaymentStatus.CREDITED, ""), credit_until=time.time() + 600
            )
            await store.insert_payment(credited)
        await store.close()

    asyncio.run(main())


def test_two_processes_racing_on_one_file_each_row_has_one_winner(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    _seed_credits(url)
    start_at = time.time() + 1.0  # both interpreters are up by then; they start together
    procs = [_spawn("race", url, owner, str(ROWS), str(start_at)) for owner in ("A", "B")]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))

    assert results[0]["errors"] == [] and results[1]["errors"] == []
    claimed = results[0]["claimed"] + results[1]["claimed"]
    inserted = results[0]["inserted"] + results[1]["inserted"]
    assert sorted(claimed) == sorted(f"k{i}" for i in range(ROWS))
    assert sorted(inserted) == sorted(f"n{i}" for i in range(ROWS))

    async def owners() -> dict[str, str]:
        store = open_store(url)
        await store.open()
        try:
            return {p.key: p.owner for p in await store.list_payments(limit=10 * ROWS)}
        finally:
            await store.close()

    final = asyncio.run(owners())
    for name, result in zip("AB", results, strict=True):
        for key in result["claimed"] + result["inserted"]:
            assert final[key] == name


def test_compare_and_swap_across_processes_loses_no_update(tmp_path: Path) -> None:
    from sqlite_worker import row

    url = f"sqlite:///{tmp_path / 'state.db'}"

    async def seed() -> None:
        store = open_store(url)
        await store.open()
        counter = replace(row("counter", PaymentStatus.IN_FLIGHT, "v0"), attempts=0)
        await store.insert_payment(counter)
        await store.close()

    asyncio.run(seed())
    wins = 150
    start_at = time.time() + 1.0
    procs = [_spawn("count", url, owner, str(wins), str(start_at)) for owner in ("A", "B")]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert results[0]["errors"] == [] and results[1]["errors"] == []

    async def final() -> int:
        store = open_store(url)
        await store.open()
        try:
            counter = await store.get_payment("counter")
            assert counter is not None
            return counter.attempts
        finally:
            await store.close()

    # Every successful swap saw the previous one: no increment was lost to a race.
    assert asyncio.run(final()) == 2 * wins


def test_fresh_file_opened_by_two_processes_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    start_at = time.time() + 1.0
    procs = [_spawn("race", url, owner, "20", str(start_at)) for owner in ("A", "B")]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert results[0]["errors"] == [] and results[1]["errors"] == []
    assert len(results[0]["inserted"]) + len(results[1]["inserted"]) == 20


def test_commits_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    url = f"sqlite:///{path}"
    proc = _spawn("hold", url)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.strip() == "ready", proc.stderr.read() if proc.stderr else ""
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    # The killed process never checkpointed: the commits live only in the WAL file.
    assert Path(f"{path}-wal").exists()

    async def reopen() -> tuple[Payment | None, Payment | None, Any]:
        store = open_store(url)
        await store.open()
        try:
            return (
                await store.get_payment("held"),
                await store.get_payment("done"),
                await store.get("replay-key"),
            )
        finally:
            await store.close()

    held, done, replay = asyncio.run(reopen())
    assert held is not None and done is not None
    assert held.status is PaymentStatus.IN_FLIGHT and held.owner == "doomed"
    assert done.status is PaymentStatus.DELIVERED and done.reference == "0xfeed"
    assert replay == "0xfeed"


def test_in_flight_payment_of_a_killed_worker_becomes_one_claimable_credit(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    proc = _spawn("hold", url)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    finally:
        proc.kill()
        proc.wait(timeout=10)

    async def restart() -> tuple[int, list[Payment | None], Payment | None]:
        store = open_store(url)
        await store.open()
        try:
            # Past the dead worker's lease (the worker set it 30 s ahead).
            later = time.time() + 60
            swept = await store.credit_abandoned(later, credit_until=later + 3600)
            claims = await asyncio.gather(
                *(
                    store.transition(
                        "held",
                        expect=(PaymentStatus.CREDITED,),
                        status=PaymentStatus.IN_FLIGHT,
                        owner=f"retry-{i}",
                        lease_until=later + 30,
                    )
                    for i in range(10)
                )
            )
            return swept, claims, await store.get_payment("done")
        finally:
            await store.close()

    swept, claims, done = asyncio.run(restart())
    assert swept == 1  # only "held": "done" was delivered before the kill
    assert len([c for c in claims if c is not None]) == 1
    assert done is not None and done.status is PaymentStatus.DELIVERED
