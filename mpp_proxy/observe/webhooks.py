"""Webhooks for the money events: queued in the store's durable outbox by the request that
caused them, sent by a background task of every worker (never by the request's own task),
at least once, signed, and retried with capped exponential backoff.

    Mpp-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

The same scheme as Stripe's: a receiver recomputes the HMAC over the timestamp, a dot and the
raw body, compares in constant time, and refuses timestamps too far from its clock. Event ids
are derived from the payment and the event, so a retried delivery carries the same id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import random
import time
from collections.abc import Iterable
from typing import Any

import orjson

from mpp_proxy.config.model import Config, Webhook
from mpp_proxy.observe.outcome import OUTCOMES, Outcome, Paid, stop_task
from mpp_proxy.state.base import OutboxEntry, Store
from mpp_proxy.state.query import display_amount

log = logging.getLogger("mpp_proxy.webhooks")

SIGNATURE_HEADER = "Mpp-Signature"
# Retries: 1 s, 2 s, 4 s ... capped at 5 minutes, with up to 10% jitter.
BACKOFF_BASE = 1.0
BACKOFF_CAP = 300.0
SEND_TIMEOUT = 10.0
# A claimed delivery is left alone by other workers this long (longer than a send can take).
CLAIM_SECONDS = 30.0
POLL_SECONDS = 0.5
BATCH = 32


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The Mpp-Signature value for `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), b"%d." % timestamp + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, body: bytes, header: str, *, tolerance: float = 300.0) -> bool:
    """What a receiver does: the signature matches and its timestamp is recent."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(time.time() - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).rsplit("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def backoff(attempts: int) -> float:
    """Seconds before retry number `attempts` (1 = the first retry)."""
    delay: float = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, attempts - 1))
    return delay * (1 + random.random() / 10)


class Webhooks:
    """Turns payment outcomes into outbox entries, and delivers the outbox."""

    def __init__(self, config: Config, store: Store) -> None:
        self._hooks: tuple[Webhook, ...] = config.observe.webhooks
        self._store = store
        self._secrets = {h.url: h.secret.value for h in self._hooks}
        self._decimals = {m.name: m.decimals for m in config.methods}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: Any = None

    # ---------------------------------------------------------------- queueing

    def entries(self, p: Paid, about: dict[str, Any], now: float) -> Iterable[OutboxEntry]:
        """The deliveries one payment's end owes, one per (event, subscribed hook); `about`
        says where it happened (service, route, request id, status)."""
        for event in OUTCOMES[p.outcome].webhooks:
            body: bytes | None = None
            event_id = _event_id(p, event)
            for hook in self._hooks:
                if event not in hook.events:
                    continue
                if body is None:
                    body = orjson.dumps(self._body(event_id, event, p, about, now))
                entry_id = hashlib.sha256(f"{event_id}|{hook.url}".encode()).hexdigest()[:32]
                yield OutboxEntry(entry_id, hook.url, body.decode(), 0, now, now)

    async def enqueue(self, o: Outcome) -> None:
        """Queue what a finished paid request owes (awaited after its response went out)."""
        if o.payment is not None:
            about = {
                "service": o.service,
                "route": o.route,
                "request_id": o.request_id,
                "status": o.status,
            }
            await self.enqueue_payment(o.payment, about)

    async def enqueue_payment(self, p: Paid, about: dict[str, Any]) -> None:
        added = False
        for entry in self.entries(p, about, time.time()):
            try:
                added = await self._store.outbox_add(entry) or added
            except Exception as exc:
                log.error("webhook %s could not be queued: %s", entry.id, type(exc).__name__)
        if added:
            self._wake.set()

    def _body(
        self, event_id: str, event: str, p: Paid, about: dict[str, Any], now: float
    ) -> dict[str, Any]:
        data: dict[str, Any] = {
            **about,
            "method": p.method,
            "amount": display_amount(p.amount, self._decimals.get(p.method, 0)),
            "amount_base_units": p.amount,
            "currency": p.currency,
            "outcome": p.outcome,
            "reference": p.reference,
            "payer": p.payer,
        }
        if p.reason:
            data["reason"] = p.reason
        return {"id": event_id, "type": event, "created": int(now), "data": data}

    # ---------------------------------------------------------------- delivery

    def start(self) -> None:
        if self._task is None and self._hooks:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="mpp-proxy webhooks"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run(self) -> None:
        import httpx

        self._client = httpx.AsyncClient(timeout=SEND_TIMEOUT)
        while True:
            try:
                sent = await self.deliver_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhook outbox unreachable: %s", type(exc).__name__)
                sent = 0
            if sent < BATCH:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)

    async def deliver_due(self) -> int:
        """Claim and send what is due; returns how many were claimed."""
        now = time.time()
        due = await self._store.outbox_claim(now, now + CLAIM_SECONDS, BATCH)
        if due:
            await asyncio.gather(*(self._deliver(e) for e in due))
        return len(due)

    async def _deliver(self, entry: OutboxEntry) -> None:
        secret = self._secrets.get(entry.target)
        if secret is None:  # the hook was removed from the config: nobody to send it to
            await self._store.outbox_done(entry.id)
            return
        body = entry.body.encode()
        headers = {
            "content-type": "application/json",
            "user-agent": "mpp-proxy-webhooks",
            SIGNATURE_HEADER: sign(secret, body, int(time.time())),
        }
        try:
            response = await self._client.post(entry.target, content=body, headers=headers)
            ok = 200 <= response.status_code < 300
            why = f"status {response.status_code}"
        except Exception as exc:
            ok, why = False, type(exc).__name__
        if ok:
            await self._store.outbox_done(entry.id)
            return
        attempts = entry.attempts + 1
        delay = backoff(attempts)
        log.warning(
            "webhook delivery %s to %s failed (%s); retry %d in %.0f s",
            entry.id[:12],
            _origin(entry.target),
            why,
            attempts,
            delay,
        )
        await self._store.outbox_retry(entry.id, time.time() + delay, attempts)


def _event_id(p: Paid, event: str) -> str:
    digest = hashlib.sha256(f"{p.key}|{event}|{p.attempts}".encode()).hexdigest()
    return "evt_" + digest[:24]


def _origin(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"
