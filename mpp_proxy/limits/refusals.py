"""Every answer the admit stage gives itself: 429 (a limit) and 503 (capacity), problem+json
with Retry-After, decided before any payment (nothing was charged, a credential stays usable)."""

from __future__ import annotations

from datetime import UTC, datetime

from mpp_proxy.problems import Headers, Problem, problem

NOTHING_CHARGED = "nothing was charged; a payment credential sent with it is still usable"


def _retry(seconds: int) -> tuple[bytes, bytes]:
    return (b"retry-after", b"%d" % seconds)


def rate_limited(retry_after: int, policy: str, rate: str, key: str, fields: Headers) -> Problem:
    return problem(
        429,
        "rate-limited",
        "Too many requests",
        f"over the limit {policy!r} ({rate}, counted by {key}): retry in {retry_after} s; "
        + NOTHING_CHARGED,
        headers=(_retry(retry_after), *fields),
        policy=policy,
        retryAfter=retry_after,
    )


def spend_cap_reached(amount: str, per: str, key: str, resets_at: float, now: float) -> Problem:
    when = datetime.fromtimestamp(resets_at, UTC).isoformat().replace("+00:00", "Z")
    wait = max(1, int(resets_at - now + 0.999))
    return problem(
        429,
        "spend-cap-reached",
        "Spend cap reached",
        f"this call would take the spending of this {key} over {amount} per {per}; the cap "
        f"resets at {when}; " + NOTHING_CHARGED,
        headers=(_retry(wait),),
        resetsAt=when,
        retryAfter=wait,
    )


def _unavailable(slug: str, title: str, detail: str, retry_after: int) -> Problem:
    return problem(
        503,
        slug,
        title,
        f"{detail}: retry in {retry_after} s; " + NOTHING_CHARGED,
        headers=(_retry(retry_after),),
        retryAfter=retry_after,
    )


def over_capacity(service: str, retry_after: int, why: str) -> Problem:
    return _unavailable(
        "over-capacity", "Over capacity", f"service '{service}' is {why}", retry_after
    )


def shedding(service: str, retry_after: int) -> Problem:
    return _unavailable(
        "shedding-load",
        "Upstream overloaded",
        f"the upstream of service '{service}' is answering slowly, so new requests are refused "
        "until it recovers",
        retry_after,
    )


def limits_unavailable(retry_after: int = 5) -> Problem:
    return _unavailable(
        "limits-unavailable",
        "Limits unavailable",
        "the store that counts this route's limits did not answer, and the route refuses "
        "when it cannot count (on_store_error = closed)",
        retry_after,
    )
