"""Load shedding: while a service's recent upstream response time is too high, new requests
are refused (503) instead of queueing behind a slow upstream. Per worker process.

"Recent response time" is the p90 (nearest rank) of the upstream's time to its response head
over the last 60 s (at most 1,000 responses), decided once there are 10 of them. Kept in O(1)
per response: the p90 is above the threshold exactly when more than a tenth of the samples
are. Shedding, one request is let through every `retry` seconds as a probe; a probe answered
in time reopens the service (and forgets the old samples), a slow one keeps it shedding.
Requests already in flight are never cut.
"""

from __future__ import annotations

import math
import time
from collections import deque
from enum import Enum

WINDOW = 60.0
MAX_SAMPLES = 1000
MIN_SAMPLES = 10


class Verdict(Enum):
    ADMIT = "admit"
    PROBE = "probe"
    SHED = "shed"


class Shedder:
    __slots__ = ("_probe_at", "_probing", "_samples", "_slow", "retry", "shedding", "threshold")

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        # How long a refused client should wait: the time between probes.
        self.retry = min(30, max(1, math.ceil(threshold)))
        self.shedding = False
        self._samples: deque[tuple[float, bool]] = deque()
        self._slow = 0
        self._probe_at = 0.0
        self._probing = False

    def admit(self) -> Verdict:
        if not self.shedding:
            return Verdict.ADMIT
        if self._probing or time.monotonic() < self._probe_at:
            return Verdict.SHED
        self._probing = True
        return Verdict.PROBE

    def retry_after(self) -> int:
        return max(1, math.ceil(self._probe_at - time.monotonic()))

    def record(self, seconds: float, *, probe: bool = False) -> None:
        """One upstream response (or failure) took `seconds` to its head."""
        now = time.monotonic()
        slow = seconds > self.threshold
        samples = self._samples
        samples.append((now, slow))
        self._slow += slow
        while samples and (len(samples) > MAX_SAMPLES or samples[0][0] < now - WINDOW):
            self._slow -= samples.popleft()[1]
        if probe:
            self._probing = False
            if slow:
                self._probe_at = now + self.retry
            else:
                self.shedding = False
                samples.clear()
                self._slow = 0
            return
        n = len(samples)
        # p90 (nearest rank) is sample ceil(0.9 n) in order: above the threshold when more
        # than n - ceil(0.9 n) samples are (integer arithmetic: 0.9 * 10 is not 9 in floats).
        if not self.shedding and n >= MIN_SAMPLES and self._slow > n - (9 * n + 9) // 10:
            self.shedding = True
            self._probe_at = now + self.retry

    def abandon(self) -> None:
        """The probe ended without reaching the upstream: the next request may probe."""
        self._probing = False
