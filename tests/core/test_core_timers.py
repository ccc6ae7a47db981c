"""Coarse per-loop timers: callbacks fire after their delay, disarmed ones never."""

from __future__ import annotations

import asyncio

from mpp_proxy.core.timers import TICK, CoarseTimers, timers_for


def test_armed_callback_fires_and_disarmed_one_does_not() -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        timers = CoarseTimers(loop)
        fired: list[str] = []
        timers.arm("a", 0.0, lambda: fired.append("a"))
        timers.arm("b", 0.0, lambda: fired.append("b"))
        timers.disarm("b")
        await asyncio.sleep(TICK * 3)
        return fired

    assert asyncio.run(main()) == ["a"]


def test_ticking_stops_when_nothing_is_armed() -> None:
    async def main() -> bool:
        timers = CoarseTimers(asyncio.get_running_loop())
        timers.arm("a", 0.0, lambda: None)
        await asyncio.sleep(TICK * 3)
        return timers._handle is None

    assert asyncio.run(main())


def test_a_raising_callback_does_not_stop_the_ticking() -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, _ctx: None)
        timers = timers_for(loop)
        assert timers_for(loop) is timers
        fired: list[str] = []

        def boom() -> None:
            raise RuntimeError("boom")

        timers.arm("boom", 0.0, boom)
        await asyncio.sleep(TICK * 3)
        timers.arm("later", 0.0, lambda: fired.append("later"))
        await asyncio.sleep(TICK * 3)
        return fired

    assert asyncio.run(main()) == ["later"]
