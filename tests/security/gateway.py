"""The proxy under attack: a proxy.toml served by granian (uvloop, HTTP/1) as a process."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.support.proxy_process import ProxyProcess

SECRET = "security-hmac-secret-0123456789abcdef"
OTHER_SECRET = "another-hmac-secret-fedcba9876543210"
REALM = "security.mpp-proxy.test"
UPSTREAM_KEY = "sk-security-upstream-key-never-shown"
BODY_LIMIT = 4096


def proxy_toml(upstream_url: str, evil_url: str, *, secret: str = SECRET) -> str:
    """Services: `api` (free and paid echo routes, X-Api-Key injected, 4 KiB body limit),
    `openai` (a free `/v1/models/*` next to a paid `/v1/chat/completions`, upstream under
    `/echo`), `slow` (one upstream connection, 1 s write timeout) and `evil` (free, hostile
    upstream).
    """
    paid = '{ price = "0.01", pay_with = ["play"] }'
    return textwrap.dedent(
        f"""\
        [proxy]
        secret_key = "{secret}"
        realm = "{REALM}"
        state = "memory://"
        allow_test_payments = true

        [methods.play]
        kind = "test"

        [services.api]
        base_url = "{upstream_url}"
        auth = {{ header = "X-Api-Key", value = "{UPSTREAM_KEY}" }}
        max_body_bytes = {BODY_LIMIT}
        timeouts = {{ connect = 2, read = 5, write = 2, pool = 2 }}
        [services.api.routes]
        "* /echo/free/*" = "free"
        "GET /bytes" = "free"
        "GET /echo/paid/*" = {paid}
        "POST /echo/paid" = {paid}

        [services.openai]
        base_url = "{upstream_url}/echo"
        [services.openai.routes]
        "GET /v1/models" = "free"
        "GET /v1/models/*" = "free"
        "* /v1/chat/completions" = {paid}

        [services.slow]
        base_url = "{upstream_url}"
        max_connections = 1
        timeouts = {{ connect = 2, read = 5, write = 1, pool = 1 }}
        [services.slow.routes]
        "* /echo/*" = "free"
        "GET /bytes" = "free"

        [services.evil]
        base_url = "{evil_url}"
        timeouts = {{ connect = 2, read = 2, write = 2, pool = 2 }}
        [services.evil.routes]
        "* /*" = "free"
        """
    )


def gateway_process(
    folder: Path, upstream_url: str, evil_url: str, *, secret: str = SECRET
) -> ProxyProcess:
    """granian serving `proxy_toml` from `folder` (started by `with`)."""
    config = folder / "proxy.toml"
    config.write_text(proxy_toml(upstream_url, evil_url, secret=secret))
    return ProxyProcess.granian("mpp_proxy:app", folder=folder, config=config)
