"""Idempotent retries: a delivered paid request re-sent with its Idempotency-Key (or x402's
payment-identifier) is answered from the stored response instead of being refused as a replay.

The stored response lives in the state store's key-value space under a name derived from the
key and the credential's ledger row, so only the credential that paid for it can fetch it, and
every worker and instance sharing the store answers it the same way.
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass
from typing import Any

from mpp_proxy.config.model import ProxySettings
from mpp_proxy.payments.refusals import refusal
from mpp_proxy.problems import Problem, problem
from mpp_proxy.state.base import Store

MAX_KEY_LENGTH = 255
_PREFIX = "mpp-proxy:replay:"
Headers = tuple[tuple[bytes, bytes], ...]


def check_key(value: str) -> Problem | None:
    """400 for a key that is empty, over 255 characters or holds control characters."""
    if (
        not value
        or len(value) > MAX_KEY_LENGTH
        or any(ord(c) < 0x21 or ord(c) > 0x7E for c in value)
    ):
        return problem(
            400,
            "bad-idempotency-key",
            "Bad request",
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters without "
            "spaces or control characters",
            field="Idempotency-Key",
        )
    return None


def fingerprint(method: str, target: str, digest: str) -> str:
    """What a retry must repeat: the method, the path and query, the body's digest."""
    return hashlib.sha256(f"{method} {target}\n{digest}".encode("latin-1")).hexdigest()


def body_fingerprint(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


@dataclass(frozen=True, slots=True)
class Replay:
    """Where one paid request's response is kept for its retries."""

    store: Store
    name: str
    fingerprint: str
    ttl: float
    max_bytes: int

    async def find(self) -> dict[str, Any] | None:
        found = await self.store.get(self.name)
        return found if isinstance(found, dict) else None

    async def keep(self, status: int, headers: Headers, body: bytes | None) -> None:
        """Store the delivered response; a body over max_bytes (None) keeps the head only."""
        doc: dict[str, Any] = {
            "fingerprint": self.fingerprint,
            "status": status,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in headers],
        }
        if body is not None:
            doc["body"] = base64.b64encode(body).decode("ascii")
        await self.store.put_if_absent_until(self.name, doc, time.time() + self.ttl)

    def answer(self, stored: dict[str, Any]) -> Problem:
        """The stored response again; 422 for another request under the same key; 409 with the
        original receipt when its body was too large to keep."""
        if stored.get("fingerprint") != self.fingerprint:
            return refusal(
                problem(
                    422,
                    "idempotency-key-reused",
                    "Idempotency-Key reused",
                    "this Idempotency-Key was used for another request (method, path or body); "
                    "use a new key for a new request",
                )
            )
        headers = tuple(
            (k.encode("latin-1"), v.encode("latin-1")) for k, v in stored.get("headers", [])
        )
        if "body" not in stored:
            receipt = tuple(h for h in headers if h[0] == b"payment-receipt")
            return refusal(
                problem(
                    409,
                    "replay-too-large",
                    "Response too large to replay",
                    "this request was delivered, but its response was too large to keep for "
                    "retries; the Payment-Receipt is the original one",
                ),
                *receipt,
            )
        body = base64.b64decode(stored["body"])
        kept = tuple(h for h in headers if h[0] != b"content-length")
        head = (*kept, (b"content-length", b"%d" % len(body)), (b"idempotent-replayed", b"true"))
        return Problem(int(stored["status"]), head, body, "idempotent-replay")


def replay_for(
    store: Store, key: str, ledger_key: str, print_: str, *, ttl: float, max_bytes: int
) -> Replay:
    name = hashlib.sha256(f"{ledger_key}\n{key}".encode("latin-1")).hexdigest()
    return Replay(store, _PREFIX + name, print_, ttl, max_bytes)


def request_replay(
    store: Store, key: str | None, ledger_key: str, print_: str, proxy: ProxySettings
) -> Replay | None:
    """Where a request with Idempotency-Key `key` keeps its response; None without a key."""
    if key is None:
        return None
    ttl, limit = float(proxy.replay_ttl), proxy.replay_max_bytes
    return replay_for(store, key, ledger_key, print_, ttl=ttl, max_bytes=limit)
