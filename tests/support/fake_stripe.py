"""A small fake of Stripe's PaymentIntent API on loopback, for pympp's Stripe charge method.

    with FakeStripe(secret_key="sk_test_x") as stripe:
        stripe.url                               # "http://127.0.0.1:<port>" (the API base)
        spt = stripe.grant(amount=5, currency="usd")      # a shared payment granted token
        stripe.grant(..., outcome="requires_action" | "declined")
        stripe.intents                           # PaymentIntents created, in order
        stripe.refunds                           # Refunds created, in order
        stripe.calls                             # POSTs received (incl. idempotent replays)
        stripe.drop_next_refund_answers = 1      # make a refund, then answer 500 (lost reply)

Implements `POST /v1/payment_intents` with `confirm=true` and `shared_payment_granted_token`:
HTTP Basic auth with the secret key, form bodies, `Idempotency-Key` (same key and body: the
cached response with `Idempotent-Replayed: true`; same key, other body: 400), one use per token,
amount/currency limits of the grant, and Stripe-shaped error bodies. `POST /v1/refunds` with
`payment_intent` refunds a succeeded intent once (a second refund of it is refused, an
idempotent replay answers the first refund again).
"""

from __future__ import annotations

import base64
import itertools
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl


@dataclass
class Grant:
    amount: int
    currency: str
    outcome: str  # succeeded | requires_action | declined
    used_by: str | None = None


@dataclass
class FakeStripe:
    secret_key: str = "sk_test_fake_0123456789"
    grants: dict[str, Grant] = field(default_factory=dict)
    intents: list[dict[str, Any]] = field(default_factory=list)
    refunds: list[dict[str, Any]] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    drop_next_refund_answers: int = 0
    _idempotency: dict[str, tuple[str, int, bytes]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def grant(self, amount: int, currency: str = "usd", outcome: str = "succeeded") -> str:
        with self._lock:
            token = f"spt_{next(self._ids):06d}"
            self.grants[token] = Grant(amount, currency, outcome)
        return token

    def __enter__(self) -> FakeStripe:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(length)
                status, headers, payload = fake._handle(self.path, dict(self.headers), body)
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                for name, value in headers:
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ------------------------------------------------------------------ API

    def _handle(
        self, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        lower = {k.lower(): v for k, v in headers.items()}
        form = dict(parse_qsl(body.decode(), keep_blank_values=True))
        with self._lock:
            self.calls.append({"path": path, "headers": lower, "form": form})
            expected = "Basic " + base64.b64encode(f"{self.secret_key}:".encode()).decode()
            if lower.get("authorization") != expected:
                return _error(401, "invalid_request_error", "Invalid API Key provided: sk_***")
            if path not in ("/v1/payment_intents", "/v1/refunds"):
                return _error(404, "invalid_request_error", f"Unrecognized request URL {path}")
            key = lower.get("idempotency-key")
            if key is not None and key in self._idempotency:
                fingerprint, status, payload = self._idempotency[key]
                if fingerprint != body.decode():
                    return _error(
                        400,
                        "idempotency_error",
                        "Keys for idempotent requests can only be used "
                        "with the same parameters they were first used with.",
                    )
                return status, [("idempotent-replayed", "true")], payload
            create = self._create if path == "/v1/payment_intents" else self._refund
            status, extra, payload = create(form)
            if key is not None:
                self._idempotency[key] = (body.decode(), status, payload)
            if path == "/v1/refunds" and status == 200 and self.drop_next_refund_answers:
                self.drop_next_refund_answers -= 1
                return _error(500, "api_error", "connection reset while answering")
            return status, extra, payload

    def _refund(self, form: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        intent_id = form.get("payment_intent", "")
        intent = next((i for i in self.intents if i["id"] == intent_id), None)
        if intent is None:
            return _error(400, "invalid_request_error", f"No such payment_intent: {intent_id}")
        if intent["status"] != "succeeded":
            return _error(400, "invalid_request_error", "This PaymentIntent has not succeeded")
        if any(r["payment_intent"] == intent_id for r in self.refunds):
            return _error(400, "invalid_request_error", "Charge has already been refunded.")
        refund = {
            "id": f"re_fake_{next(self._ids):06d}",
            "object": "refund",
            "amount": intent["amount"],
            "currency": intent["currency"],
            "payment_intent": intent_id,
            "status": "succeeded",
        }
        self.refunds.append(refund)
        return 200, [], json.dumps(refund).encode()

    def _create(self, form: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
        token = form.get("shared_payment_granted_token", "")
        grant = self.grants.get(token)
        if grant is None:
            return _error(400, "invalid_request_error", "No such shared payment granted token")
        if form.get("confirm") != "true":
            return _error(400, "invalid_request_error", "confirm must be true")
        if grant.used_by is not None:
            return _error(400, "invalid_request_error", "This token was already used")
        amount = int(form.get("amount", "0"))
        if form.get("currency") != grant.currency or amount > grant.amount:
            return _error(400, "invalid_request_error", "Amount or currency exceeds the grant")
        if grant.outcome == "declined":
            return _error(402, "card_error", "Your card was declined.")
        intent_id = f"pi_fake_{next(self._ids):06d}"
        grant.used_by = intent_id
        status = "requires_action" if grant.outcome == "requires_action" else "succeeded"
        intent = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": amount,
            "currency": form.get("currency"),
            "status": status,
            "metadata": {
                k[len("metadata[") : -1]: v for k, v in form.items() if k.startswith("metadata[")
            },
        }
        self.intents.append(intent)
        return 200, [], json.dumps(intent).encode()


def _error(status: int, kind: str, message: str) -> tuple[int, list[tuple[str, str]], bytes]:
    return status, [], json.dumps({"error": {"type": kind, "message": message}}).encode()
