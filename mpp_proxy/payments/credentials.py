"""Credential checks, sans-I/O: a credential, a route's offers and the clock in, a verdict out.

The order is pympp's (parse, method, HMAC, realm, route binding, terms, expiry, payload), so a
refusal names the same fault pympp's own handler would. Nothing here touches the store or the
network: settling is the gate's business.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson
from pydantic import ValidationError

from mpp_proxy.config.model import Route
from mpp_proxy.payments.challenges import scope_dict
from mpp_proxy.payments.offers import Offer, RouteOffers, first_line
from mpp_proxy.payments.pympp import (
    MAX_AUTHORIZATION_SIZE,
    Challenge,
    Credential,
    InvalidChallengeError,
    InvalidPayloadError,
    MalformedCredentialError,
    ParseError,
    PaymentError,
    PaymentExpiredError,
    application_meta,
    authenticate_echo,
    challenge_from_echo,
)

# The request headers the payment stage reads (the core captures them while it strips them).
CREDENTIAL_HEADER = b"authorization"
DEDICATED_CREDENTIAL_HEADER = b"payment-authorization"
ACCEPT_PAYMENT_HEADER = b"accept-payment"
# x402 clients pay with these (v2, and v1's name).
X402_HEADERS = frozenset({b"payment-signature", b"x-payment"})
PAYMENT_REQUEST_HEADERS = (
    frozenset({CREDENTIAL_HEADER, DEDICATED_CREDENTIAL_HEADER, ACCEPT_PAYMENT_HEADER})
    | X402_HEADERS
)


@dataclass(frozen=True, slots=True)
class PaidRequest:
    """What the gate needs from one request to a paid route."""

    offers: RouteOffers
    method: str  # upper-case HTTP method
    path: str  # raw path as the app sees it, "/openai/v1/chat/completions"
    query: str  # raw query string, "" when none
    credential: str | None  # "Payment <token>" (or the Payment-Authorization value), None
    accept: str | None  # the Accept-Payment value(s), None when absent
    # The body's digest when the price was read from the body: challenges bind it.
    digest: str | None = None
    # Idempotency-Key (or x402's payment-identifier) and what a retry under it must repeat.
    idempotency: str | None = None
    fingerprint: str = ""
    # An x402 PAYMENT-SIGNATURE (when no Payment credential came), and the absolute URL of
    # the resource it must name.
    x402: str | None = None
    resource: str = ""

    @classmethod
    def of(
        cls,
        offers: RouteOffers,
        method: str,
        path: str,
        query: str,
        headers: Iterable[tuple[bytes, bytes]],
        digest: str | None = None,
    ) -> PaidRequest:
        """From request headers (lower-case names; only the payment ones are read)."""
        credential, accept, x402 = read_payment_headers(headers)
        return cls(offers, method, path, query, credential, accept, digest, x402=x402)

    @property
    def route(self) -> Route:
        return self.offers.route

    @property
    def scope(self) -> dict[str, str]:
        """The `_mppx_scope` a credential for this request must echo."""
        return scope_dict(self.method, self.path, self.query)

    @property
    def text(self) -> str:
        """`GET /svc/path?q`: the exact request a credential is bound to (ledger `scope`)."""
        return f"{self.method} {self.path}" + (f"?{self.query}" if self.query else "")


@dataclass(frozen=True, slots=True)
class Checked:
    """An authentic credential for one of the route's offers, its payload parsed."""

    offer: Offer
    credential: Credential
    challenge: Challenge


@dataclass(frozen=True, slots=True)
class Unsupported:
    """The credential pays with a method this route does not offer (400)."""

    method: str


Verdict = Checked | Unsupported | PaymentError


def read_payment_headers(
    headers: Iterable[tuple[bytes, bytes]],
) -> tuple[str | None, str | None, str | None]:
    """(the Payment credential, the Accept-Payment value, an x402 payment), each or None."""
    credential: str | None = None
    dedicated: str | None = None
    x402: str | None = None
    accept: list[str] = []
    for name, value in headers:
        if name == CREDENTIAL_HEADER:
            for part in value.decode("latin-1").split(","):
                part = part.strip()
                if part[:8].lower() == "payment ":
                    credential = part
                    break
        elif name == DEDICATED_CREDENTIAL_HEADER:
            dedicated = value.decode("latin-1").strip()
        elif name == ACCEPT_PAYMENT_HEADER:
            accept.append(value.decode("latin-1"))
        elif name in X402_HEADERS:
            x402 = value.decode("latin-1").strip() or None
    if dedicated:
        credential = dedicated
    return credential, (", ".join(accept) if accept else None), x402


def credential_token(credential: str) -> str | None:
    """The token of a `Payment <token>` credential; None when empty or oversized."""
    token = credential[8:].strip() if credential[:8].lower() == "payment " else credential
    if len(credential) > MAX_AUTHORIZATION_SIZE or not token:
        return None
    return token


# A payer the credential claims is used as a limit key: bounded, and only a DID.
_MAX_PAYER = 256


def claimed_payer(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The payer (`source` DID) the request's credential claims, read without verifying it;
    None without a credential, or when the credential does not decode or names no DID."""
    credential = read_payment_headers(headers)[0]
    token = credential_token(credential) if credential else None
    if token is None:
        return None
    try:
        document = orjson.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error):
        return None
    source = document.get("source") if isinstance(document, dict) else None
    if not isinstance(source, str) or not source.startswith("did:") or len(source) > _MAX_PAYER:
        return None
    return source


def has_credential(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether the request presents a payment (an MPP credential or an x402 payment): it may
    be paid, not only asked."""
    credential, _, x402 = read_payment_headers(headers)
    return credential is not None or x402 is not None


def ledger_key(token: str) -> str:
    """The ledger row of a credential: SHA-256 of the exact token presented."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def issued_echo(
    credential: Credential, secret: str
) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    """The echoed (request, opaque) when the echo carries, byte for byte, the encodings this
    server issued (the challenge id is the HMAC over them); None otherwise, for pympp's
    authenticate_echo to decide. The issued strings are canonical already, so recomputing the
    id needs no decoding and re-encoding (RFC 8785 in pure Python) of what they carry."""
    echo = credential.challenge
    if not echo.request or echo.header:
        return None
    parts = (
        echo.realm,
        echo.method,
        echo.intent,
        echo.request,
        echo.expires or "",
        echo.digest or "",
    )
    mac = _hmac_of(secret).copy()
    mac.update("|".join((*parts, echo.opaque or "")).encode())
    issued = base64.urlsafe_b64encode(mac.digest()).rstrip(b"=")
    if not hmac.compare_digest(issued, echo.id.encode()):
        return None
    request = _decoded(echo.request)
    opaque = _decoded(echo.opaque) if echo.opaque else None
    return None if request is None or (echo.opaque and opaque is None) else (request, opaque)


@lru_cache(maxsize=8)
def _hmac_of(secret: str) -> hmac.HMAC:
    """The keyed HMAC state for `secret`, copied per use (the key schedule is done once)."""
    return hmac.new(secret.encode(), digestmod=hashlib.sha256)


def _decoded(b64: str) -> dict[str, Any] | None:
    try:
        value = json.loads(base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)))
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def check(
    req: PaidRequest, token: str, *, secret: str, realm: str, now: float, allow_expired: bool
) -> Verdict:
    """Stateless checks of `token` against the route's offers, in pympp's order."""
    try:
        credential = Credential.from_authorization("Payment " + token)
    except ParseError as exc:
        return MalformedCredentialError(str(exc))
    echo = credential.challenge
    offers = req.offers.by_key.get((echo.method, echo.intent))
    if not offers:
        return Unsupported(f"{echo.method}/{echo.intent}")
    try:
        echoed, opaque = issued_echo(credential, secret) or authenticate_echo(
            credential, secret_key=secret
        )
    except InvalidChallengeError:
        return InvalidChallengeError(
            echo.id, "the challenge was not issued by this server or was altered"
        )
    except MalformedCredentialError as exc:
        return exc
    if echo.realm != realm:
        return InvalidChallengeError(echo.id, "issued for another realm")
    offer = _bound_offer(req, offers, echo.id, echoed)
    if not isinstance(offer, Offer):
        return offer
    if application_meta(opaque) is not None:
        return InvalidChallengeError(echo.id, "unexpected challenge binding")
    if not _same_body(echo.digest, req.digest):
        return InvalidChallengeError(
            echo.id,
            "the credential was bought for another request body"
            if req.digest
            else "unexpected challenge binding",
        )
    expires = expiry_time(echo.expires)
    if expires is None:
        return InvalidChallengeError(echo.id, "missing or invalid expires")
    if not allow_expired and expires <= now:
        return PaymentExpiredError(echo.expires)
    try:
        payload = offer.built.server.method.parse_payload(credential.payload)
    except ValidationError as exc:
        return InvalidPayloadError(first_line(exc))
    challenge = challenge_from_echo(echo, echoed, opaque)
    return Checked(offer, replace(credential, payload=payload), challenge)


def _bound_offer(
    req: PaidRequest, offers: tuple[Offer, ...], challenge_id: str, echoed: dict[str, Any]
) -> Offer | PaymentError:
    """The offer whose terms the echoed request carries, for this very request."""
    echoed_scope = echoed.get("_mppx_scope")
    if echoed_scope != req.scope:
        where = describe_scope(echoed_scope)
        return InvalidChallengeError(
            challenge_id, f"the credential was bought for {where}, not for {req.text}"
        )
    wire = {k: v for k, v in echoed.items() if k != "_mppx_scope"}
    offer = next((o for o in offers if o.wire == wire), None)
    if offer is None:
        return InvalidChallengeError(
            challenge_id,
            "the credential pays other terms (amount, currency or recipient) than this "
            "route asks now",
        )
    return offer


def _same_body(echoed: str | None, digest: str | None) -> bool:
    """The echoed challenge binds this request's body (or, like the request, no body)."""
    if not digest or not echoed:
        return not digest and not echoed
    return hmac.compare_digest(echoed.encode("latin-1", "replace"), digest.encode("latin-1"))


def describe_scope(scope: Any) -> str:
    if not isinstance(scope, dict):
        return "a challenge without a route binding"
    text = f"{scope.get('http_method', '?')} {scope.get('resource', '?')}"
    if scope.get("query"):
        text += f"?{scope['query']}"
    return text


def expiry_time(value: str | None) -> float | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return moment.timestamp()
