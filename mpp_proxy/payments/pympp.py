"""The one module that imports pympp (`mpp`): every name the payments package uses from it.

pympp's API churns between minor versions and several names we need are private (`_parsing`,
`_units`, `server.verify`'s echo helpers). Keeping them here means an upgrade touches one file.
The method-specific modules (tempo, stripe, evm) are heavy to import, so they load on first use.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from mpp import Challenge, Credential, Receipt
from mpp._body_digest import compute as _compute_digest
from mpp._parsing import MAX_AUTHORIZATION_SIZE, ParseError
from mpp._parsing import _escape_quoted as escape_quoted
from mpp._units import parse_units, transform_units
from mpp._validation import Validation
from mpp.errors import (
    CredentialReplayedError,
    InternalPaymentError,
    InvalidChallengeError,
    InvalidPayloadError,
    MalformedCredentialError,
    PaymentError,
    PaymentExpiredError,
    PaymentInsufficientError,
    PaymentOutcomeUnknownError,
    VerificationError,
    VerificationFailedError,
)
from mpp.methods import Method
from mpp.runtime import ClientMethod, CredentialParams
from mpp.server.compose import ComposedHandler
from mpp.server.method import RequestContext, ServerMethod, ValidateContext, VerifyContext
from mpp.server.mpp import Mpp
from mpp.server.verify import _application_meta as application_meta
from mpp.server.verify import _authenticate_echo as authenticate_echo
from mpp.server.verify import _challenge_from_echo as challenge_from_echo
from mpp.store import Store as PymppStore
from mpp.x402 import (
    InvalidHeaderError,
    decode_payment_signature,
    payment_required_header,
    payment_response_header,
)
from mpp.x402._server import x402_credential
from mpp.x402._types import requirements_match

__all__ = [
    "MAX_AUTHORIZATION_SIZE",
    "Challenge",
    "ClientMethod",
    "ComposedHandler",
    "Credential",
    "CredentialParams",
    "CredentialReplayedError",
    "InternalPaymentError",
    "InvalidChallengeError",
    "InvalidHeaderError",
    "InvalidPayloadError",
    "MalformedCredentialError",
    "Method",
    "Mpp",
    "ParseError",
    "PaymentError",
    "PaymentExpiredError",
    "PaymentInsufficientError",
    "PaymentOutcomeUnknownError",
    "PymppStore",
    "Receipt",
    "RequestContext",
    "ServerMethod",
    "ValidateContext",
    "Validation",
    "VerificationError",
    "VerificationFailedError",
    "VerifyContext",
    "application_meta",
    "authenticate_echo",
    "body_digest",
    "challenge_from_echo",
    "decode_payment_signature",
    "escape_quoted",
    "evm_assets",
    "evm_server",
    "parse_units",
    "payment_challenges",
    "payment_required_header",
    "payment_response_header",
    "requirements_match",
    "stripe_server",
    "tempo_account",
    "tempo_recovery_parts",
    "tempo_route_rules",
    "tempo_server",
    "transform_units",
    "x402_credential",
]


def body_digest(body: bytes) -> str:
    """pympp's challenge `digest` of a request body (`sha-256=<base64>`)."""
    digest: str = _compute_digest(body)
    return digest


def payment_challenges(header_value: str) -> list[str]:
    """pympp's quote-aware split of one WWW-Authenticate value into Payment challenges."""
    from mpp.client.transport import _payment_challenges

    result: list[str] = _payment_challenges(header_value)
    return result


def tempo_server() -> ModuleType:
    from mpp.methods.tempo import server

    return server


def tempo_account() -> Any:
    """The TempoAccount class (`from_key`)."""
    from mpp.methods.tempo import TempoAccount

    return TempoAccount


def tempo_route_rules() -> tuple[float, Any]:
    """(minimum challenge validity of sponsored charges, the fixed-memo check of a wire request)."""
    from mpp.methods.tempo.fee_payer_policy import MIN_REMAINING_VALIDITY_SECONDS
    from mpp.methods.tempo.schemas import reject_fixed_attribution_memos

    return float(MIN_REMAINING_VALIDITY_SECONDS), reject_fixed_attribution_memos


def tempo_recovery_parts() -> tuple[Any, Any, Any, Any, Any]:
    """What looking a settled Tempo credential up on chain needs:
    (resolve method settings, ChargeIntent, canonical raw tx, raw tx hash, ChargeRequest)."""
    from mpp.methods.tempo.client import _tempo_method
    from mpp.methods.tempo.intents import (
        ChargeIntent,
        _canonical_raw_transaction,
        _raw_transaction_hash,
    )
    from mpp.methods.tempo.schemas import ChargeRequest

    return (
        _tempo_method,
        ChargeIntent,
        _canonical_raw_transaction,
        _raw_transaction_hash,
        (ChargeRequest),
    )


def stripe_server() -> ModuleType:
    from mpp.methods.stripe import server

    return server


def evm_server() -> ModuleType:
    from mpp.methods.evm import server

    return server


def evm_assets() -> ModuleType:
    from mpp.methods.evm import assets

    return assets
