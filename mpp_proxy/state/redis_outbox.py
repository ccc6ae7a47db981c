"""The webhook outbox on Redis: a sorted set of ids by due time and one hash per entry."""

from __future__ import annotations

from typing import Any

from mpp_proxy.state.base import OutboxEntry
from mpp_proxy.state.codec import decode_value


class RedisOutbox:
    """Mixed into RedisStore, whose `_scripts_call` runs one of its registered Lua scripts."""

    _prefix: str
    _redis: Any

    async def _scripts_call(self, name: str, keys: list[str], args: list[str]) -> Any:
        raise NotImplementedError

    # -------------------------------------------------------------------- outbox

    async def outbox_add(self, entry: OutboxEntry) -> bool:
        fields = {
            "target": entry.target,
            "body": entry.body,
            "attempts": str(entry.attempts),
            "due_at": repr(float(entry.due_at)),
            "created_at": repr(float(entry.created_at)),
        }
        flat = [x for pair in fields.items() for x in pair]
        got = await self._scripts_call(
            "outbox_add", [f"{self._prefix}outbox"], [self._prefix, entry.id, *flat]
        )
        return bool(got)

    async def outbox_claim(self, now: float, until: float, limit: int) -> list[OutboxEntry]:
        if limit <= 0:
            return []
        got = await self._scripts_call(
            "outbox_claim",
            [f"{self._prefix}outbox"],
            [self._prefix, repr(float(now)), repr(float(until)), str(limit)],
        )
        entries = [
            OutboxEntry(i, t, b, int(a), float(d), float(c))
            for i, t, b, a, d, c in decode_value(got)
        ]
        return sorted(entries, key=lambda e: (e.created_at, e.id))

    async def outbox_retry(self, entry_id: str, due_at: float, attempts: int) -> None:
        row = f"{self._prefix}outbox:{entry_id}"
        if await self._redis.exists(row):
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(row, mapping={"due_at": repr(float(due_at)), "attempts": str(attempts)})
                pipe.zadd(f"{self._prefix}outbox", {entry_id: float(due_at)})
                await pipe.execute()

    async def outbox_done(self, entry_id: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(f"{self._prefix}outbox:{entry_id}")
            pipe.zrem(f"{self._prefix}outbox", entry_id)
            await pipe.execute()

    async def outbox_size(self) -> int:
        return int(await self._redis.zcard(f"{self._prefix}outbox"))
