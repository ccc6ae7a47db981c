"""`mpp-proxy pay`: an HTTP client that pays 402 challenges (test money or Tempo) within a cap."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any

from mpp_proxy.cli.failure import EXIT_CONFIG, EXIT_RUNTIME, Failure
from mpp_proxy.cli.wire import Offer, offer_lines, parse_offers, receipt_lines

PRIVATE_KEY_ENV = "MPP_PRIVATE_KEY"
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


@dataclass(slots=True)
class Wallet:
    """The client payment methods available here, by MPP method name ("test", "tempo")."""

    methods: dict[str, Any] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # method -> how to enable it


def test_money_client() -> Any:
    """The pympp client method paying the proxy's test-money kind (method name "test")."""
    from mpp_proxy.payments.testmoney import client_method

    return client_method()


def build_wallet(rpc_url: str | None) -> Wallet:
    wallet = Wallet()
    test = test_money_client()
    wallet.methods[str(test.name)] = test
    key = os.environ.get(PRIVATE_KEY_ENV, "").strip()
    if key:
        from mpp.methods.tempo import TempoAccount
        from mpp.methods.tempo import client as tempo

        try:
            account = TempoAccount.from_key(key)
        except Exception as exc:
            # Never echo the key, not even a prefix: only say it is malformed.
            raise Failure(
                f"${PRIVATE_KEY_ENV} is not a valid private key ({type(exc).__name__})",
                "set it to a 0x-prefixed 32-byte hex key",
                exit_code=EXIT_CONFIG,
            ) from None
        options: dict[str, Any] = {"account": account}
        if rpc_url:
            options["rpc_url"] = rpc_url
        wallet.methods["tempo"] = tempo.charge(**options)
    else:
        wallet.missing["tempo"] = f"set ${PRIVATE_KEY_ENV} (and --rpc-url) to pay with Tempo"
    return wallet


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
    offers: list[Offer], wallet: Wallet, *, only: str | None, cap: Decimal
) -> tuple[Offer, Any]:
    """The first offer we can pay within the cap, or a Failure that says why none fits."""
    if not offers:
        raise Failure(
            "the 402 response carries no Payment challenge this client can read",
            "is this an MPP server? `WWW-Authenticate: Payment ...` headers are expected",
        )
    candidates = [o for o in offers if only is None or o.method == only]
    if not candidates:
        offered = ", ".join(f"{o.method} ({o.price})" for o in offers) or "nothing parseable"
        raise Failure(
            f"the server does not offer --method {only}: it offers {offered}",
            "pick one of those with --method",
        )
    payable = [(o, wallet.methods[o.method]) for o in candidates if o.method in wallet.methods]
    if not payable:
        hints = [wallet.missing[o.method] for o in candidates if o.method in wallet.missing]
        offered = ", ".join(f"{o.method} ({o.price})" for o in candidates)
        raise Failure(
            f"no offer this client can pay: the server offers {offered}",
            hints[0] if hints else "this client pays test money and Tempo only",
        )
    for offer, method in payable:
        if offer.amount is not None and offer.amount <= cap:
            return offer, method
    cheapest = min(payable, key=lambda pair: pair[0].amount or Decimal("Infinity"))[0]
    raise Failure(
        f"refusing to pay {cheapest.price}: above --max-amount {format(cap, 'f')}",
        f"raise --max-amount to at least {format(cheapest.amount or 0, 'f')} to pay it",
    )


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
    if not any(name.lower() == "accept-payment" for name, _ in headers) and wallet.methods:
        headers.append(("Accept-Payment", ", ".join(f"{m}/charge" for m in wallet.methods)))
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
                    offers, wallet, only=request.payment_method, cap=cap
                )
                label = "test money" if offer.method == "test" else offer.method
                err.write(f"  paying {offer.price} with {label} (max {format(cap, 'f')})\n")
                credential = await client_method.create_credential(
                    _credential_params(offer.challenge)
                )
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
            raise Failure(
                f"{what} after paying",
                "retry the same request with -H 'Authorization: <the credential above>'",
            ) from exc
        if isinstance(exc, httpx.TimeoutException):
            raise Failure(what, "raise --timeout") from exc
        if isinstance(exc, httpx.ConnectError):
            raise Failure(what, "is the proxy running?") from exc
        raise Failure(what) from exc
    return 0 if response.status_code < 400 else EXIT_RUNTIME


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
