"""`mpp-proxy demo --once`: the offline walk-through runs end to end and exits 0."""

from __future__ import annotations

import re

from cli_harness import free_port, run_cli


def test_demo_once_walks_through_and_exits_0() -> None:
    result = run_cli("demo", "--once", "--port", str(free_port()), timeout=60)
    assert result.code == 0, result.out + result.err
    out = result.out
    assert "All 5 steps passed." in out
    # The steps, in order, with the statuses they show.
    positions = [
        out.index(marker)
        for marker in ("[1/5]", "< 200 OK", "[2/5]", "< 402 Payment Required", "[3/5]",
                       "receipt (decoded):", "[4/5]", "< 403 Forbidden", "[5/5]")
    ]  # fmt: skip
    assert positions == sorted(positions)
    assert re.search(r"price\s+0\.01 TEST", out)
    assert "mpp-proxy pay http://127.0.0.1:" in out
    assert "FAILED" not in out
