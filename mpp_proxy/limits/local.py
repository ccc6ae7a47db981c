"""One rate limit decided in this process (memory:// state) in as few steps as Python allows:
the usual limited request (a free route, one limit, nothing to hold) costs this and no more.

The bucket table is the memory store's; the arithmetic is GCRA as everywhere else
(state.codec.gcra): the request fits while (arrival time + interval) - now <= capacity.
"""

from __future__ import annotations

from time import monotonic_ns

from mpp_proxy.limits.rates import DIGITS, RESETS, RatePolicy
from mpp_proxy.problems import Headers
from mpp_proxy.state.memory import MemoryStore

HeaderList = list[tuple[bytes, bytes]]


class LocalRate:
    """The decision and its RateLimit field in one method, on copies of the policy's numbers
    (every attribute lookup and call counts here: ~130 CPU instructions per bytecode)."""

    __slots__ = (
        "_by_ip",
        "_capacity",
        "_grown",
        "_heads",
        "_interval",
        "_ip_prefix",
        "_last",
        "_policy_field",
        "_route",
        "_tats",
        "fields",
        "policy",
    )

    def __init__(self, policy: RatePolicy, memory: MemoryStore, route: str, fields: bool) -> None:
        self.policy = policy
        self.fields = fields
        self._tats = memory.rate_table
        self._grown = memory.grown
        self._route = route
        self._by_ip = policy.by_ip
        self._ip_prefix = policy.ip_prefix
        self._interval = policy.interval
        self._capacity = policy.capacity
        self._heads = policy.r_heads
        self._policy_field = (b"ratelimit-policy", policy.policy_field())
        # The fields made last, and the `used` they were made for: a limit far from being hit
        # finds its bucket drained and `used` the same every time, and so the same fields.
        self._last: tuple[int, Headers] = (-1, ())

    def take(self, client: str, headers: HeaderList) -> Headers | int:
        """The RateLimit fields of an admitted request, or (refused) its `used`, negated."""
        if self._by_ip and ":" not in client:
            bucket = self._ip_prefix + client
        else:
            policy = self.policy
            bucket = policy.prefix + policy.key.value(client, None, self._route, headers)
        now = monotonic_ns() // 1000
        tats = self._tats
        try:
            tat = tats[bucket]
            if tat < now:
                tat = now
        except KeyError:  # a new bucket: the table grew
            self._grown()
            tat = now
        used = tat + self._interval - now
        if used > self._capacity:
            return -used
        tats[bucket] = now + used
        if not self.fields:
            return ()
        last = self._last
        if last[0] == used:
            return last[1]
        heads = self._heads
        reset = (used + 999_999) // 1_000_000
        if heads is None or reset >= RESETS:
            fields = (self._policy_field, (b"ratelimit", self.policy.field(used)))
        else:
            remaining = (self._capacity - used) // self._interval
            fields = (self._policy_field, (b"ratelimit", heads[remaining] + DIGITS[reset]))
        self._last = (used, fields)
        return fields
