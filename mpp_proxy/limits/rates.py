"""A rate limit compiled for the hot path: its GCRA bucket shape, where its buckets live, and
how it reads in the IETF RateLimit-Policy and RateLimit fields (draft-ietf-httpapi-ratelimit-
headers): `"name";q=<count>;w=<seconds>` and `"name";r=<remaining>;t=<seconds>`.

GCRA (the generic cell rate algorithm) rather than a token bucket with a refill timer or a
sliding log: one integer per key (the theoretical arrival time), exact under concurrency with
one atomic read-modify-write, an exact Retry-After, and the same arithmetic in Python, SQL and
Lua. Bucket shape: emission interval T = period / count, capacity L = burst * T; a request fits
while (its arrival time + T) - now <= L.
"""

from __future__ import annotations

import math

from mpp_proxy.config.limits import policy_names
from mpp_proxy.config.model import RateLimit
from mpp_proxy.limits.keys import KeyReader

__all__ = ["MICRO", "RatePolicy", "policy_names"]

MICRO = 1_000_000
# Formatting a field is most of what an allowed request costs the limiter; for the usual
# bursts and resets the pieces are made once: "name";r=N;t= per N up to the burst, and t.
_TABLE = 1024
RESETS = 4 * _TABLE  # resets up to ~68 minutes come from the table
DIGITS = [b"%d" % n for n in range(RESETS)]


class RatePolicy:
    __slots__ = (
        "by_ip",
        "capacity",
        "field_head",
        "interval",
        "ip_prefix",
        "key",
        "limit",
        "name",
        "prefix",
        "quoted",
        "r_heads",
        "spec",
    )

    def __init__(self, limit: RateLimit, name: str, scope: str) -> None:
        self.limit = limit
        self.name = name
        self.key = KeyReader(limit.key)
        self.interval = max(1, round(limit.period * MICRO / limit.count))
        self.capacity = self.interval * limit.burst
        self.spec = (self.interval, self.capacity)
        # Bucket names: the scope (route or service), the limit itself, then the key value.
        self.prefix = f"{scope}|{limit.count}/{limit.period:g}/{limit.burst}|{limit.key}|"
        self.by_ip = limit.key == "ip"
        self.ip_prefix = self.prefix + "ip:"  # + an IPv4 address: the bucket (see keys.ip_value)
        self.quoted = b'"' + name.encode("ascii") + b'"'
        self.field_head = self.quoted + b";r="
        self.r_heads = (
            [b"%s%d;t=" % (self.field_head, r) for r in range(limit.burst)]
            if limit.burst <= _TABLE
            else None
        )

    def policy_field(self) -> bytes:
        window = max(1, math.ceil(self.limit.period))
        return self.quoted + b";q=%d;w=%d" % (self.limit.count, window)

    def remaining(self, used: int) -> int:
        """Requests that still fit now, once `used` of the capacity is taken."""
        return max(0, (self.capacity - used) // self.interval)

    def field(self, used: int) -> bytes:
        """After an admitted request: what remains, and the seconds until all of it is back."""
        remaining = (self.capacity - used) // self.interval
        return b"%s%d;t=%d" % (
            self.field_head,
            remaining if remaining > 0 else 0,
            -(-used // MICRO),
        )

    def retry_after(self, used: int) -> int:
        """Refused with `used` (this request counted): whole seconds until it would fit."""
        return max(1, -(-(used - self.capacity) // MICRO))

    def refused_field(self, used: int) -> bytes:
        """Refused: this bucket's state without the refused request."""
        if used > self.capacity:
            return self.quoted + b";r=0;t=%d" % self.retry_after(used)
        return self.field(used - self.interval)
