"""`mpp-proxy demo`: a weather API, the proxy in front of it and a paying client, all offline."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import orjson

from mpp_proxy.cli.banner import Listener, render_banner
from mpp_proxy.cli.demo_upstream import CITIES, weather_app
from mpp_proxy.cli.failure import EXIT_RUNTIME, Failure
from mpp_proxy.cli.serve import check_port, load
from mpp_proxy.cli.wire import b64url_json, offer_lines, parse_offers, receipt_lines

HOST = "127.0.0.1"
PRICE = "0.01"
STARTUP_TIMEOUT = 15.0

DEMO_CONFIG = """\
# The config `mpp-proxy demo` runs: one service, one free and one paid route, test money.
[proxy]
secret_key = "{secret}"        # HMAC key for challenges (random per demo run)
realm = "demo.localhost"
host = "{host}"
port = {port}
state = "memory://"            # fine for one process; use sqlite:///path for real
title = "mpp-proxy demo"
description = "A weather API, paid per forecast with play money."
allow_test_payments = true     # the demo only: test money is free money

[methods.play]
kind = "test"                  # play money: no keys, no network, nothing settles

[services.weather]
title = "Demo weather"
base_url = "http://{host}:{upstream_port}"

[services.weather.routes]
"GET /v1/cities" = "free"

[services.weather.routes."GET /v1/forecast/:city"]
price = "{price}"
pay_with = ["play"]
description = "Three-day forecast for one city"
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class Narrator:
    """Prints the walk-through; every step says what it shows and whether it held."""

    def __init__(self, out: IO[str], total: int) -> None:
        self.out = out
        self.total = total
        self.index = 0
        self.failed: list[str] = []

    def say(self, text: str = "") -> None:
        self.out.write(text + "\n")
        self.out.flush()

    def step(self, title: str) -> None:
        self.index += 1
        self.say()
        self.say(f"[{self.index}/{self.total}] {title}")

    def detail(self, text: str, indent: int = 4) -> None:
        for line in text.splitlines() or [""]:
            self.say(" " * indent + line)

    def check(self, ok: bool, good: str, bad: str) -> bool:
        if ok:
            self.say(f"    ok: {good}")
        else:
            self.say(f"    FAILED: {bad}")
            self.failed.append(bad)
        return ok


def _pretty(body: bytes, limit: int = 12) -> str:
    """JSON bodies indented (cut to `limit` lines), anything else as text."""
    try:
        text = orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        text = body.decode(errors="replace")
    lines = text.splitlines()
    if len(lines) > limit:
        lines = [*lines[:limit], f"... ({len(lines) - limit} more lines)"]
    return "\n".join(lines)


def _status(response: Any) -> str:
    return f"< {response.status_code} {response.reason_phrase}"


@dataclass(frozen=True, slots=True)
class Urls:
    base: str
    free: str
    paid: str


async def walk_through(client: Any, urls: Urls, say: Narrator) -> bool:
    """Free call, 402, pay, 200 with receipt, replay refused, discovery. True when all held."""
    await _free_call(client, urls, say)
    offer = await _challenge(client, urls, say)
    if offer is None:
        return False
    header, credential = await _pay(client, urls, say, offer)
    await _replay(client, urls, say, header, credential)
    await _discovery(client, urls, say)
    return not say.failed


async def _free_call(client: Any, urls: Urls, say: Narrator) -> None:
    say.step("A free route passes straight through to the weather API")
    say.detail(f"$ curl {urls.free}")
    r = await client.get(urls.free)
    say.detail(_status(r))
    say.detail(_pretty(r.content))
    say.check(
        r.status_code == 200, "free routes need no payment", f"expected 200, got {r.status_code}"
    )


async def _challenge(client: Any, urls: Urls, say: Narrator) -> Any:
    """The 402 and its challenges decoded; the test-money offer, None when there is none."""
    say.step("A paid route answers 402 Payment Required, with a challenge")
    say.detail(f"$ curl -i {urls.paid}")
    r = await client.get(urls.paid)
    say.detail(_status(r))
    challenges = r.headers.get_list("www-authenticate")
    for value in challenges:
        say.detail(f"< www-authenticate: {value[:96]}{'...' if len(value) > 96 else ''}")
    say.detail(f"< cache-control: {r.headers.get('cache-control', '')}")
    offers = parse_offers(challenges)
    for offer in offers:
        say.detail("challenge (decoded):")
        say.detail("\n".join(offer_lines(offer)), indent=6)
    say.detail("body (RFC 9457 problem):")
    say.detail(_pretty(r.content), indent=6)
    test_offers = [o for o in offers if o.method == "test"]
    if not say.check(
        r.status_code == 402 and bool(test_offers),
        "the challenge names the price, the method and the exact request it pays for",
        f"expected 402 with a test-money challenge, got {r.status_code}",
    ):
        return None
    return test_offers[0]


async def _pay(client: Any, urls: Urls, say: Narrator, offer: Any) -> tuple[str, str]:
    """Pay the offer with test money and retry; (the credential's header, the credential)."""
    from mpp.runtime import CredentialParams

    from mpp_proxy.cli.pay import test_money_client

    say.step("The client pays with test money and retries with the credential")
    method = test_money_client()
    credential = await method.create_credential(CredentialParams(challenge=offer.challenge))
    header = str(offer.challenge.credential_header)
    say.detail(f"paying {offer.price} ...")
    say.detail(f"> {header}: {credential[:60]}...")
    _show_credential(credential, say)
    r = await client.get(urls.paid, headers={header: credential})
    say.detail(_status(r))
    receipt = r.headers.get("payment-receipt")
    if receipt:
        say.detail(f"< payment-receipt: {receipt[:60]}...")
        say.detail("receipt (decoded):")
        say.detail("\n".join(receipt_lines(receipt)), indent=6)
    say.detail(_pretty(r.content))
    say.check(
        r.status_code == 200 and bool(receipt),
        "paid, forwarded, and the answer carries a Payment-Receipt",
        f"expected 200 with a Payment-Receipt, got {r.status_code}"
        + ("" if receipt else " without a receipt"),
    )
    return header, credential


def _show_credential(credential: str, say: Narrator) -> None:
    try:
        decoded = b64url_json(credential.split(" ", 1)[1])
        echo = decoded.get("challenge", {})
        say.detail("credential (decoded):")
        say.detail(f"challenge   {echo.get('id')} (echoed back, with everything it binds)", 6)
        say.detail(f"payload     {orjson.dumps(decoded.get('payload')).decode()}", 6)
        if decoded.get("source"):
            say.detail(f"source      {decoded['source']}", 6)
    except (ValueError, IndexError, AttributeError):
        pass


async def _replay(client: Any, urls: Urls, say: Narrator, header: str, credential: str) -> None:
    say.step("Replaying the same credential is refused")
    say.detail(f"$ curl -i -H '{header}: {credential[:24]}...' {urls.paid}")
    r = await client.get(urls.paid, headers={header: credential})
    say.detail(_status(r))
    say.detail(_pretty(r.content))
    say.check(
        r.status_code == 403,
        "each credential buys exactly one call",
        f"expected 403, got {r.status_code}",
    )


async def _discovery(client: Any, urls: Urls, say: Narrator) -> None:
    say.step("Agents discover routes and prices at /llms.txt and /openapi.json")
    say.detail(f"$ curl {urls.base}/llms.txt")
    r = await client.get(f"{urls.base}/llms.txt")
    say.detail(_status(r))
    say.detail(_pretty(r.content, limit=10))
    say.check(r.status_code == 200, "prices are public", f"expected 200, got {r.status_code}")


async def _wait_ready(client: Any, url: str, task: asyncio.Task[Any], what: str) -> None:
    import httpx

    deadline = asyncio.get_running_loop().time() + STARTUP_TIMEOUT
    while True:
        if task.done():
            exc = task.exception()
            raise Failure(
                f"the {what} did not start ({type(exc).__name__}: {exc})", "run again with --debug"
            )
        try:
            await client.get(url)
            return
        except httpx.TransportError:
            if asyncio.get_running_loop().time() > deadline:
                raise Failure(
                    f"the {what} did not start within {STARTUP_TIMEOUT:g}s",
                    "run again with --debug",
                ) from None
            await asyncio.sleep(0.05)


def _embedded(app: Any, port: int, debug: bool) -> Any:
    from granian.constants import HTTPModes, Interfaces
    from granian.server.embed import Server

    return Server(
        app,
        address=HOST,
        port=port,
        interface=Interfaces.ASGI,
        http=HTTPModes.http1,
        log_enabled=debug,
    )


async def _run(once: bool, port: int, debug: bool, out: IO[str]) -> int:
    import httpx

    from mpp_proxy.core import Proxy

    with tempfile.TemporaryDirectory(prefix="mpp-proxy-demo-") as tmp:
        upstream_port = free_port()
        config_path = Path(tmp) / "demo.toml"
        config_path.write_text(
            DEMO_CONFIG.format(
                secret=secrets.token_urlsafe(32),
                host=HOST,
                port=port,
                upstream_port=upstream_port,
                price=PRICE,
            )
        )
        config = load(str(config_path))
        servers = [
            _embedded(weather_app, upstream_port, debug),
            _embedded(Proxy(config), port, debug),
        ]
        tasks = [asyncio.create_task(s.serve()) for s in servers]
        base = f"http://{HOST}:{port}"
        urls = Urls(base, f"{base}/weather/v1/cities", f"{base}/weather/v1/forecast/lisbon")
        say = Narrator(out, total=5)
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                await _wait_ready(
                    client, f"http://{HOST}:{upstream_port}/v1/cities", tasks[0], "demo weather API"
                )
                await _wait_ready(client, f"{base}/healthz", tasks[1], "proxy")
                _intro(say, config, port, upstream_port)
                passed = await walk_through(client, urls, say)
            say.say()
            if passed:
                say.say(f"All {say.total} steps passed.")
            else:
                say.say(f"The walk-through FAILED: {'; '.join(say.failed)}")
            if not once:
                # Commands to try only while there is a proxy to try them on.
                _try_it(say, urls)
                await _until_interrupted()
                say.say("\nstopping the demo")
            return 0 if passed else EXIT_RUNTIME
        finally:
            for server in servers:
                server.stop()
            await asyncio.wait(tasks, timeout=5)


def _intro(say: Narrator, config: Any, port: int, upstream_port: int) -> None:
    say.say("mpp-proxy demo: everything runs on this machine, no keys, no network.")
    say.say(f"  upstream  a small weather API on http://{HOST}:{upstream_port}")
    say.say(f"  proxy     mpp-proxy on http://{HOST}:{port}, charging {PRICE} TEST per forecast")
    say.say("  client    this command, paying with test money")
    say.say()
    say.say(render_banner(config, Listener(HOST, port), source="(generated demo config)").rstrip())


def self_command() -> str:
    """How the user can run this program again: `mpp-proxy` when on PATH, else the exact path."""
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "mpp-proxy":
        on_path = shutil.which("mpp-proxy")
        if on_path and os.path.realpath(on_path) == os.path.realpath(argv0):
            return "mpp-proxy"
        return argv0
    return f"{os.path.relpath(sys.executable)} -m mpp_proxy"


def _try_it(say: Narrator, urls: Urls) -> None:
    me = self_command()
    say.say()
    say.say("Try it yourself (the demo keeps serving until Ctrl-C):")
    say.say(f"  curl {urls.free}")
    say.say(f"  curl -i {urls.base}/weather/v1/forecast/tokyo")
    say.say(f"  {me} pay {urls.base}/weather/v1/forecast/tokyo")
    say.say(f"  {me} pay --max-amount 0.001 {urls.base}/weather/v1/forecast/oslo   # refused")
    say.say(f"  curl {urls.base}/openapi.json")


async def _until_interrupted() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _runner(main: Callable[[], Coroutine[Any, Any, int]]) -> int:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


async def _serve_upstream(port: int, debug: bool, out: IO[str]) -> int:
    server = _embedded(weather_app, port, debug)
    task = asyncio.create_task(server.serve())
    try:
        import httpx

        async with httpx.AsyncClient(timeout=5) as client:
            await _wait_ready(client, f"http://{HOST}:{port}/v1/cities", task, "demo weather API")
        out.write(
            f"demo weather API on http://{HOST}:{port}: GET /v1/cities, GET /v1/forecast/:city "
            f"({', '.join(sorted(CITIES))}); Ctrl-C stops it\n"
        )
        out.flush()
        await _until_interrupted()
        return 0
    finally:
        server.stop()
        await asyncio.wait([task], timeout=5)


def demo_upstream(*, port: int, debug: bool) -> int:
    """`mpp-proxy demo --upstream-only`: the weather API alone, a stand-in for the operator's."""
    if port == 0:
        port = free_port()
    check_port(HOST, port)
    return _runner(lambda: _serve_upstream(port, debug, sys.stdout))


def demo(*, once: bool, port: int, debug: bool) -> int:
    if port == 0:
        port = free_port()
    check_port(HOST, port)
    return _runner(lambda: _run(once, port, debug, sys.stdout))
