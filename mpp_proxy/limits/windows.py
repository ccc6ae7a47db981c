"""The windows spend caps count in: UTC calendar minutes, hours, days, weeks (from Monday) and
months. A window's start names its counter; its end is when the cap resets."""

from __future__ import annotations

from datetime import UTC, datetime

_FIXED = {"minute": 60, "hour": 3600, "day": 86400}
_WEEK = 7 * 86400
_MONDAY = 4 * 86400  # 1970-01-05, the first Monday after the epoch


def window(per: str, now: float) -> tuple[int, int]:
    """(start, end) in unix seconds of the `per` window holding `now`."""
    size = _FIXED.get(per)
    if size is not None:
        start = int(now // size) * size
        return start, start + size
    if per == "week":
        start = int((now - _MONDAY) // _WEEK) * _WEEK + _MONDAY
        return start, start + _WEEK
    moment = datetime.fromtimestamp(now, UTC)
    first = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    following = datetime(moment.year + moment.month // 12, moment.month % 12 + 1, 1, tzinfo=UTC)
    return int(first.timestamp()), int(following.timestamp())
