"""`mpp-proxy pay`: an HTTP client that pays 402 challenges (test money or Tempo) within a cap."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any

from mpp_proxy.cli.failure import EXIT_CONFIG, EXIT_RUNTIME, Failure
from mpp_proxy.cli.wire import Offer, offer_lines, parse_offers, receipt_lines
from mpp_proxy.client import (
    PRIVATE_KEY_ENV,
    RPC_URL_ENV,
    InvalidKey,
    PaymentRefused,
    SpendingGuard,
    Wallet,
    wallet_from_env,
)

_SHOWN_HEADERS = (
    "content-type",
    "content-length",
    "cache-control",
    "retry-after",
    "payment-receipt",
)


@dataclass(frozen=True, slots=True)
class PayRequest:
    """What to call and how much the caller is willing to pay for it."""

    url: str
    http_method: str | None = None
    data: str | None = None
    headers: tuple[str, ...] = ()
    payment_method: str | None = None
    max_amount: str = "1"
    rpc_url: str | None = None
    timeout: float = 60.0


def test_money_client() -> Any:
    """The client method paying the proxy's test-money kind (method name "test")."""
    from mpp_proxy.client import test_money

    return test_money()


def build_wallet(rpc_url: str | None) -> Wallet:
    """Test money, and Tempo when $MPP_PRIVATE_KEY is set (on --rpc-url's chain when given)."""
    environ = dict(os.environ)
    if rpc_url:
        environ[RPC_URL_ENV] = rpc_url
    try:
        return wallet_from_env(environ)
    except InvalidKey as exc:
        # The message never holds the key, not even a prefix.
        raise Failure(
            f"${PRIVATE_KEY_ENV} is {exc}",
            "set it to a 0x-prefixed 32-byte hex key",
            exit_code=EXIT_CONFIG,
        ) from None


def parse_max(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise Failure(
            f"--max-amount {text!r} is not a decimal number",
            "pass display units such as 0.10",
            exit_code=EXIT_CONFIG,
        ) from None
    if not value.is_finite() or value < 0:
        raise Failure(f"--max-amount must be zero or more, got {text}", exit_code=EXIT_CONFIG)
    return value


def choose_offer(
    offers: list[Offer], wallet: Wallet, *, only: str | None, cap: Decimal, url: str = ""
) -> tuple[Offer, Any]:
    """The first offer we can pay within the cap, or a Failure that says why none fits."""
    if not offers:
        raise Failure(
            "the 402 response carries no Payment challenge this client can read",
            "is this an MPP server? `WWW-Authenticate: Payment ...` headers are expected",
        )
    candidates = [o for o in offers if only is None or o.method == only]
    offered = ", ".join(f"{o.method} ({o.price})" for o in offers)
    if not candidates:
        raise Failure(
            f"the server does not offer --method {only}: it offers {offered}",
            "pick one of those with --method",
        )
    if only is not None and only in wallet.missing:
        price = ", ".join(o.price for o in candidates)
        raise Failure(
            f"--method {only} needs ${PRIVATE_KEY_ENV}: the server offers {only} ({price}) but "
            "no private key is set",
            f"export {PRIVATE_KEY_ENV}=0x... (the payer's key; never pass it as an argument)",
        )
    try:
        return SpendingGuard(max_amount=cap).choose(
            candidates, wallet.methods, url or "http://localhost", missing=wallet.missing
        )
    except PaymentRefused as refused:
        if refused.reason != "max_amount":
            raise Failure(str(refused)) from None
        cheapest = min((o for o in candidates if o.amount is not None), key=lambda o: o.amount or 0)
        raise Failure(
            str(refused).replace("max_amount", "--max-amount"),
            f"raise --max-amount to at least {format(cheapest.amount or 0, 'f')} to pay it",
        ) from None


async def _sign(method: Any, offer: Offer) -> str:
    """The credential for one offer; an unreachable chain RPC is named by its host only."""
    import httpx

    try:
        credential: str = await method.create_credential(_credential_params(offer.challenge))
    except httpx.TransportError as exc:
        # RPC URLs often carry an API key in their path: show the host, nothing more.
        host = exc.request.url.host if _has_request(exc) else "(unknown)"
        what = (
            "did not answer in time"
            if isinstance(exc, httpx.TimeoutException)
            else ("is unreachable")
        )
        raise Failure(
            f"the {offer.method} RPC at {host} {what} ({type(exc).__name__}); nothing was paid",
            "check --rpc-url (or $MPP_RPC_URL) and the network, then retry",
        ) from exc
    return credential


def _has_request(exc: Exception) -> bool:
    try:
        return getattr(exc, "request", None) is not None
    except RuntimeError:  # httpx raises when the request was never set
        return False


def _body(data: str | None) -> bytes | None:
    if data is None:
        return None
    if data == "@-":
        return sys.stdin.buffer.read()
    if data.startswith("@"):
        try:
            return Path(data[1:]).read_bytes()
        except OSError as exc:
            raise Failure(f"cannot read {data[1:]}: {exc.strerror}", exit_code=EXIT_CONFIG) from exc
    return data.encode()


def _headers(values: tuple[str, ...], body: bytes | None) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for value in values:
        name, sep, rest = value.partition(":")
        if not sep or not name.strip():
            raise Failure(
                f"-H {value!r} is not 'Name: value'",
                "write it as -H 'Name: value'",
                exit_code=EXIT_CONFIG,
            )
        headers.append((name.strip(), rest.strip()))
    names = {name.lower() for name, _ in headers}
    if body is not None and "content-type" not in names:
        looks_json = body.lstrip()[:1] in (b"{", b"[")
        headers.append(
            ("Content-Type", "application/json" if looks_json else "application/octet-stream")
        )
    return headers


def _reason(status: int) -> str:
    from http import HTTPStatus

    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _show_response(response: Any, err: IO[str]) -> None:
    err.write(f"< {response.status_code} {_reason(response.status_code)}\n")
    for name in _SHOWN_HEADERS:
        for value in response.headers.get_list(name):
            shown = value if len(value) <= 72 else value[:69] + "..."
            err.write(f"<   {name}: {shown}\n")
    receipt = response.headers.get("payment-receipt")
    if receipt:
        err.write("  receipt (decoded):\n")
        err.writelines(f"    {line}\n" for line in receipt_lines(receipt))


async def run_pay(request: PayRequest, out: IO[str], err: IO[str]) -> int:
    import httpx

    cap = parse_max(request.max_amount)
    wallet = build_wallet(request.rpc_url)
    body = _body(request.data)
    method = (request.http_method or ("POST" if body is not None else "GET")).upper()
    headers = _headers(request.headers, body)
    _add_accept_payment(headers, request, wallet)
    credential = ""
    try:
        async with httpx.AsyncClient(timeout=request.timeout) as client:
            err.write(f"> {method} {request.url}\n")
            response = await client.request(method, request.url, headers=headers, content=body)
            supplied = any(
                name.lower() in ("authorization", "payment-authorization")
                and value.lower().startswith("payment ")
                for name, value in headers
            )
            # A credential the user passed (redeeming a credit) is never topped up by a new payment.
            if response.status_code == 402 and not supplied:
                _show_response(response, err)
                offers = parse_offers(response.headers.get_list("www-authenticate"))
                for index, offer in enumerate(offers, 1):
                    err.write(f"  offer {index}:\n")
                    err.writelines(f"    {line}\n" for line in offer_lines(offer))
                offer, client_method = choose_offer(
                    offers, wallet, only=request.payment_method, cap=cap, url=request.url
                )
                label = "test money" if offer.method == "test" else offer.method
                err.write(f"  paying {offer.price} with {label} (max {format(cap, 'f')})\n")
                credential = await _sign(client_method, offer)
                header = str(offer.challenge.credential_header)
                err.write(f"> {method} {request.url}  ({header}: {credential[:40]}...)\n")
                response = await client.request(
                    method, request.url, headers=[*headers, (header, credential)], content=body
                )
            _show_response(response, err)
            err.flush()
            _write_body(response.content, out)
    except httpx.InvalidURL as exc:
        raise Failure(f"invalid URL {request.url!r}: {exc}", exit_code=EXIT_CONFIG) from exc
    except httpx.UnsupportedProtocol as exc:
        raise Failure(
            f"invalid URL {request.url!r}: {exc}",
            "use http:// or https://",
            exit_code=EXIT_CONFIG,
        ) from exc
    except httpx.TransportError as exc:
        raise _transport_failure(exc, request, credential, err) from exc
    return 0 if response.status_code < 400 else EXIT_RUNTIME


def _add_accept_payment(headers: list[tuple[str, str]], request: PayRequest, wallet: Any) -> None:
    """Unless the user set one: what we can pay first, but hear about every offer (`*`), so a
    refusal can say what the server takes instead of the server answering 400 to a narrow
    preference."""
    if any(name.lower() == "accept-payment" for name, _ in headers):
        return
    wanted = (
        [request.payment_method] if request.payment_method else [m.name for m in wallet.methods]
    )
    preference = [f"{name}/charge" for name in dict.fromkeys(wanted)]
    headers.append(("Accept-Payment", ", ".join([*preference, "*;q=0.1"])))


def _transport_failure(
    exc: Exception, request: PayRequest, credential: str, err: IO[str]
) -> Failure:
    """What to tell the user when the connection failed (before or after paying)."""
    import httpx

    # Refused, timed out, or the connection died mid-response (the head may have come).
    if isinstance(exc, httpx.TimeoutException):
        what = f"{request.url} did not answer within {request.timeout:g}s"
    elif isinstance(exc, httpx.ConnectError):
        what = f"cannot connect to {request.url} ({exc})"
    else:
        what = f"the connection to {request.url} failed ({type(exc).__name__}: {exc})"
    if credential:
        # The payment may have settled: the same credential redeems it (a credit), so hand
        # it to the user instead of paying again.
        err.write(f"credential sent: {credential}\n")
        return Failure(
            f"{what} after paying",
            "retry the same request with -H 'Authorization: <the credential above>'",
        )
    if isinstance(exc, httpx.TimeoutException):
        return Failure(what, "raise --timeout")
    if isinstance(exc, httpx.ConnectError):
        return Failure(what, "is the proxy running?")
    return Failure(what)


def _write_body(body: bytes, out: IO[str]) -> None:
    """The body byte for byte (images and gzip survive a pipe), ending with a newline on a tty."""
    out.flush()
    raw = getattr(out, "buffer", None)
    if raw is not None:
        raw.write(body)
        raw.flush()
    else:
        out.write(body.decode(errors="replace"))
    if body and not body.endswith(b"\n") and out.isatty():
        out.write("\n")
    out.flush()


def _credential_params(challenge: Any) -> Any:
    from mpp.runtime import CredentialParams

    return CredentialParams(challenge=challenge)


def pay(request: PayRequest) -> int:
    return asyncio.run(run_pay(request, sys.stdout, sys.stderr))
