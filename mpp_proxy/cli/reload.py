"""The admin API's reload for workers of `mpp-proxy serve`: vet the edited config here, then
signal the serve process, which vets it again and replaces the workers (as on SIGHUP)."""

from __future__ import annotations

import asyncio
import os
import signal

from mpp_proxy.cli.failure import Failure
from mpp_proxy.cli.serve import SERVE_PID_ENV, WORKERS_ENV, vetted
from mpp_proxy.core.admin import Reload

__all__ = ["reload_hook"]


def reload_hook(path: str) -> Reload | None:
    """The reload for a worker of `mpp-proxy serve` (None in any other process)."""
    pid = os.environ.get(SERVE_PID_ENV, "")
    if not pid.isdigit():
        return None
    workers = int(os.environ.get(WORKERS_ENV, "1") or 1)

    async def reload() -> str | None:
        try:
            # Loading and compiling take a few milliseconds of CPU: off the event loop.
            await asyncio.to_thread(vetted, path, workers)
        except Failure as failure:
            return failure.line
        os.kill(int(pid), signal.SIGHUP)
        return None

    return reload
