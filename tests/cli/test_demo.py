"""`mpp-proxy demo --once`: the offline walk-through runs end to end and exits 0."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

from cli_harness import run_cli

from tests.support.ports import free_port
from tests.support.proxy_process import process_env


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
    assert "FAILED" not in out
    # The proxy has exited: no commands to try against it.
    assert "Try it yourself" not in out
    assert not re.search(r"(mpp-proxy|-m mpp_proxy) pay http://", out)
    assert out.rstrip().endswith("All 5 steps passed.")


def test_demo_keeps_serving_for_pay_until_interrupted() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mpp_proxy", "demo", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=process_env(),
    )
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.strip().startswith("curl ") and line.strip().endswith("/openapi.json"):
                break  # the last command of "Try it yourself"
        assert "All 5 steps passed.\n" in lines, "".join(lines)
        shown = "".join(lines)
        assert "Try it yourself (the demo keeps serving until Ctrl-C):" in shown
        assert re.search(r"(mpp-proxy|-m mpp_proxy) pay http://127\.0\.0\.1:\d+/weather/", shown)
        paid = run_cli("pay", f"http://127.0.0.1:{port}/weather/v1/forecast/tokyo")
        assert paid.code == 0, paid.err
        assert json.loads(paid.out)["city"] == "Tokyo"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
        assert proc.returncode == 0
        assert "stopping the demo" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
