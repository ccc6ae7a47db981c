"""Accept-Payment: the client's ranked payment methods (`tempo/charge, stripe;q=0.5`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True, slots=True)
class Preference:
    """One entry: `name/intent` where either part may be `*`; `name` alone means any intent."""

    name: str
    intent: str
    q: float
    position: int

    def specificity(self, name: str, intent: str) -> int:
        """-1 when the entry does not match `name/intent`, else higher is more specific."""
        if self.name not in ("*", name) or self.intent not in ("*", intent):
            return -1
        return (self.name != "*") * 2 + (self.intent != "*")


@lru_cache(maxsize=1024)
def parse_accept_payment(value: str) -> tuple[Preference, ...]:
    """Parse a header value; unparseable entries and q-values are skipped (lenient, like Accept)."""
    prefs: list[Preference] = []
    for position, item in enumerate(value.split(",")):
        token, *params = (part.strip() for part in item.split(";"))
        if not token:
            continue
        q = 1.0
        bad = False
        for param in params:
            key, _, val = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(val.strip())
                except ValueError:
                    bad = True
                if not 0.0 <= q <= 1.0:
                    bad = True
        if bad:
            continue
        name, _, intent = token.lower().partition("/")
        prefs.append(Preference(name, intent or "*", q, position))
    return tuple(prefs)


def rank(keys: Sequence[tuple[str, str]], header: str | None) -> tuple[int, ...]:
    """Indexes into `keys` (offers as (method, intent), in config order) in presentation order.

    No header: config order. With a header, each offer takes the q of its most specific matching
    entry; offers no entry matches, or whose q is 0, are left out. Ties keep the header's order,
    then the config's. An empty result means the client accepts none of the offers.
    """
    if header is None:
        return tuple(range(len(keys)))
    return _rank(tuple(keys), header)


@lru_cache(maxsize=1024)
def _rank(keys: tuple[tuple[str, str], ...], header: str) -> tuple[int, ...]:
    prefs = parse_accept_payment(header)
    scored: list[tuple[float, int, int]] = []
    for index, (name, intent) in enumerate(keys):
        best: Preference | None = None
        best_spec = -1
        for pref in prefs:
            spec = pref.specificity(name, intent)
            if spec > best_spec:
                best, best_spec = pref, spec
        if best is None or best.q <= 0.0:
            continue
        scored.append((-best.q, best.position, index))
    scored.sort()
    return tuple(index for _, _, index in scored)
