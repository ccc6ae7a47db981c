"""`mpp_proxy.client` is what a paying agent installs: it loads nothing of the gateway's server."""

from __future__ import annotations

import os
import subprocess
import sys

SERVER_SIDE = (
    "config",
    "core",
    "payments",
    "router",
    "state",
    "discovery",
    "limits",
    "observe",
    "cli",
)


def test_the_client_imports_nothing_of_the_server_side() -> None:
    code = (
        "import sys, mpp_proxy.client, mpp_proxy.client.httpx2, mpp_proxy.client.__main__\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('mpp_proxy'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert "mpp_proxy.client.transport" in loaded
    server = [m for m in loaded if m.split(".")[1:2] and m.split(".")[1] in SERVER_SIDE]
    assert server == []


def _address(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MPP_")}
    return subprocess.run(
        [sys.executable, "-m", "mpp_proxy.client", "address"],
        capture_output=True,
        text=True,
        env={**base, **env},
    )


def test_address_prints_the_account_of_the_key_and_never_the_key() -> None:
    key = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"  # anvil's first
    done = _address({"MPP_PRIVATE_KEY": key})
    assert done.returncode == 0
    assert done.stdout.strip() == "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
    missing = _address({})
    assert missing.returncode == 2 and "MPP_PRIVATE_KEY is not set" in missing.stderr
    bad = _address({"MPP_PRIVATE_KEY": "0xnotakeyzq4"})
    assert bad.returncode == 2 and "zq4" not in bad.stderr
