"""The client tests' gateway: the proxy on loopback (uvicorn, in-process) in front of an echo
upstream and loopback OpenAI and Anthropic APIs, paid with test money or Tempo on anvil."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mpp_proxy.config import Config, charge, free, make_config
from mpp_proxy.config import presets as services
from mpp_proxy.config.model import PaymentMethod
from mpp_proxy.core import Proxy
from mpp_proxy.state import Payment, open_store
from tests.support.anthropic_upstream import AnthropicUpstream
from tests.support.anvil import DEV_ACCOUNTS
from tests.support.openai_upstream import OpenAIUpstream
from tests.support.served import Served
from tests.support.upstream import Upstream

RECIPIENT = DEV_ACCOUNTS[-1]
OPENAI_KEY = "sk-operator-openai-0123456789"
ANTHROPIC_KEY = "sk-ant-operator-0123456789"


@dataclass
class Gateway:
    url: str
    state: Path  # the SQLite ledger
    echo: Upstream
    openai: OpenAIUpstream
    anthropic: AnthropicUpstream


def _config(method: PaymentMethod, state: Path, echo: str, openai: str, anthropic: str) -> Config:
    name = method.name
    return make_config(
        secret_key="client-tests-secret-0123456789abcdef",
        realm="127.0.0.1",
        state=f"sqlite:///{state}",
        allow_test_payments=True,
        methods=[method],
        services=[
            services.service(
                "api",
                base_url=echo,
                routes={
                    "GET /echo/free": free,
                    "GET /echo/cheap": charge("0.01", name),
                    "POST /echo/cheap": charge("0.01", name),
                    "GET /echo/dear": charge("0.50", name),
                    "GET /status/:code": charge("0.01", name),
                    "GET /sse": charge("0.01", name),
                },
            ),
            services.openai(
                api_key=OPENAI_KEY,
                base_url=openai,
                routes={"POST /v1/chat/completions": charge("0.01", name)},
            ),
            services.anthropic(
                api_key=ANTHROPIC_KEY,
                base_url=anthropic,
                routes={"POST /v1/messages": charge("0.01", name)},
            ),
        ],
    )


def serve_gateway(
    method: PaymentMethod, tmp: Path, ups: tuple[Upstream, OpenAIUpstream, AnthropicUpstream]
) -> Iterator[Gateway]:
    echo, openai, anthropic = ups
    state = tmp / "state.db"
    config = _config(method, state, echo.url, openai.url, anthropic.url)
    with Served(Proxy(config)) as served:
        yield Gateway(served.url, state, echo, openai, anthropic)


def ledger(path: Path) -> list[Payment]:
    """The gateway's ledger, read from its SQLite file the way an operator's tools read it."""

    async def read() -> list[Payment]:
        store = open_store(f"sqlite:///{path}")
        await store.open()
        try:
            return await store.list_payments(limit=1000)
        finally:
            await store.close()

    return asyncio.run(read())
