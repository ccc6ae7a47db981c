"""examples/clients/ scripts pay the example gateway with Tempo on a local chain, one payer each.

(With test money they run from the README's Clients section: tests/docs.)
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from client_gateway import RECIPIENT

from tests.support.anthropic_upstream import AnthropicUpstream
from tests.support.anvil import PATH_USD, Anvil
from tests.support.openai_upstream import OpenAIUpstream, reply_text
from tests.support.ports import free_port
from tests.support.proxy_process import ProxyProcess

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "clients"
TEMPO = f"""[methods.usd]
kind = "tempo"
recipient = "{RECIPIENT}"
currency = "{PATH_USD}"
chain_id = 31337
rpc_url = "${{TEMPO_RPC_URL}}"
"""


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory, chain: Anvil) -> Iterator[str]:
    """examples/clients/gateway.toml, paid in pathUSD on anvil instead of test money."""
    tmp = tmp_path_factory.mktemp("examples")
    weather = free_port()
    text = (EXAMPLES / "gateway.toml").read_text(encoding="utf-8")
    text = text.replace('[methods.test]\nkind = "test"\n', TEMPO)
    text = text.replace("allow_test_payments = true", "")
    config = tmp / "gateway.toml"
    config.write_text(text.replace("127.0.0.1:8000", f"127.0.0.1:{weather}"), encoding="utf-8")
    api = ProxyProcess(
        [sys.executable, "-m", "mpp_proxy", "demo", "--upstream-only", "--port", str(weather)],
        port=weather,
        folder=tmp,
        ready="/v1/cities",
    )
    with OpenAIUpstream() as openai, AnthropicUpstream() as anthropic:
        env = {
            "MPP_SECRET_KEY": "examples-secret-0123456789abcdef0123",
            "TEMPO_RPC_URL": chain.rpc_url,
            "OPENAI_API_KEY": "sk-op",
            "ANTHROPIC_API_KEY": "sk-ant-op",
            "OPENAI_BASE_URL": openai.url,
            "ANTHROPIC_BASE_URL": anthropic.url,
        }
        with api, ProxyProcess.serve("--config", str(config), folder=tmp, env=env) as served:
            yield served.url


@pytest.mark.parametrize(
    ("script", "args", "answer"),
    [
        ("httpx_weather.py", ["oslo"], "today in Oslo"),
        ("openai_chat.py", [], reply_text("Say hello in five words.")),
        ("openai_chat.py", ["--stream"], reply_text("Say hello in five words.")),
        ("openai_async.py", [], reply_text("Say hello in five words.")),
        ("openai_async.py", ["--stream"], reply_text("Say hello in five words.")),
        ("anthropic_messages.py", [], reply_text("Say hello in five words.")),
        ("anthropic_messages.py", ["--stream"], reply_text("Say hello in five words.")),
    ],
)
def test_example_pays_with_tempo(
    chain: Anvil, gateway_url: str, script: str, args: list[str], answer: str
) -> None:
    payer = chain.new_account()  # anvil mines one payment per payer
    env = {k: v for k, v in os.environ.items() if not k.startswith("MPP_")}
    env |= {
        "MPP_PROXY_URL": gateway_url,
        "MPP_PRIVATE_KEY": payer.private_key,
        "MPP_RPC_URL": chain.url,
    }
    before = chain.balance(RECIPIENT)
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert answer in done.stdout
    paid = re.search(r"paid (\S+) pathUSD with tempo: (0x[0-9a-f]{64})", done.stdout)
    assert paid, done.stdout
    tx = chain.receipt(paid.group(2))
    assert tx is not None and tx["status"] == "0x1"
    price = 1_000 if script == "httpx_weather.py" else 10_000
    assert chain.balance(RECIPIENT) - before == price
    assert payer.private_key[2:] not in done.stdout + done.stderr
