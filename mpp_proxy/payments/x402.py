"""x402 beside MPP on routes paid with an `evm` method, through pympp's x402 module: unpaid
answers carry PAYMENT-REQUIRED, a PAYMENT-SIGNATURE (or X-PAYMENT) pays the matching offer as
a credential of its own, paid answers carry PAYMENT-RESPONSE. Same ledger, settlement timing
and refusals as MPP credentials; x402's payment-identifier is the request's idempotency key."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from mpp_proxy.payments.pympp import (
    Credential,
    InvalidHeaderError,
    InvalidPayloadError,
    MalformedCredentialError,
    PaymentError,
    Receipt,
    VerificationFailedError,
    challenge_from_echo,
    decode_payment_signature,
    payment_required_header,
    payment_response_header,
    requirements_match,
    x402_credential,
)

if TYPE_CHECKING:
    from mpp_proxy.payments.credentials import Checked, PaidRequest
    from mpp_proxy.payments.offers import Offer, RouteOffers

PAYMENT_REQUIRED = b"payment-required"
PAYMENT_RESPONSE = b"payment-response"
# Declares the payment-identifier extension, so x402 clients send an id retries can repeat.
_IDENTIFIER = {
    "payment-identifier": {
        "info": {"required": False},
        "schema": {
            "type": "object",
            "properties": {
                "required": {"type": "boolean"},
                "id": {"type": "string", "minLength": 16, "maxLength": 128},
            },
            "required": ["required"],
        },
    }
}


def x402_offers(offers: RouteOffers) -> list[Offer]:
    """The route's offers that x402 clients can pay (evm)."""
    return [o for o in offers.offers if o.built.server.x402 is not None]


def _request(offer: Offer, req: PaidRequest) -> dict[str, Any]:
    return {**offer.wire, "_mppx_scope": req.scope}


def required_header(req: PaidRequest, error: str | None = None) -> tuple[bytes, bytes] | None:
    """PAYMENT-REQUIRED for a 402 on a route with x402 offers, else None."""
    accepts = []
    for offer in x402_offers(req.offers):
        intent = offer.built.server.x402
        assert intent is not None
        accepts.append(intent.x402_requirements(_request(offer, req)))
    if not accepts or not req.resource:
        return None
    value = payment_required_header(accepts, req.resource, error, _IDENTIFIER)
    return None if value is None else (PAYMENT_REQUIRED, value.encode("ascii"))


def check(req: PaidRequest, realm: str) -> Checked | PaymentError:
    """The x402 payment as a checked credential for the offer whose requirements it echoes."""
    from mpp_proxy.payments.credentials import Checked

    signature = req.x402
    assert signature is not None
    try:
        payment = decode_payment_signature(signature)
    except InvalidHeaderError as exc:
        return MalformedCredentialError(f"invalid PAYMENT-SIGNATURE header: {exc}")
    for offer in x402_offers(req.offers):
        intent = offer.built.server.x402
        assert intent is not None
        request = _request(offer, req)
        if not requirements_match(payment["accepted"], intent.x402_requirements(request)):
            continue
        try:
            credential = x402_credential(
                signature,
                intent,
                method=offer.built.wire_name,
                request=request,
                realm=realm,
                resource_url=req.resource,
                http_method=req.method,
            )
            payload = offer.built.server.method.parse_payload(credential.payload)
        except PaymentError as exc:
            return exc
        except ValidationError as exc:
            return InvalidPayloadError(str(exc).splitlines()[0])
        challenge = challenge_from_echo(credential.challenge, request, None)
        parsed = Credential(
            challenge=credential.challenge, payload=payload, source=credential.source
        )
        return Checked(offer, parsed, challenge)
    return VerificationFailedError("x402 payment payload does not match route requirements")


def payment_identifier(signature: str) -> str | None:
    """x402's payment-identifier id in a PAYMENT-SIGNATURE, None when absent or unreadable."""
    try:
        payment = decode_payment_signature(signature)
    except InvalidHeaderError:
        return None
    extensions = payment.get("extensions")
    found = extensions.get("payment-identifier") if isinstance(extensions, dict) else None
    info = found.get("info") if isinstance(found, dict) else None
    ident = info.get("id") if isinstance(info, dict) else None
    return ident if isinstance(ident, str) else None


def response_header(credential: Credential, receipt: Receipt) -> tuple[bytes, bytes] | None:
    """PAYMENT-RESPONSE for a paid x402 request."""
    value = payment_response_header(credential, receipt)
    return None if value is None else (PAYMENT_RESPONSE, value.encode("ascii"))
