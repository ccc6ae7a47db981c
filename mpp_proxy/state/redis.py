"""The Redis store (redis://host:port/db): shared state for several proxy instances."""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Sequence
from typing import Any, Final

from mpp_proxy.state.base import BucketSpec, Payment, PaymentStatus, Taken, Totals
from mpp_proxy.state.codec import (
    check_expiry,
    coerce_changes,
    decode_value,
    encode_value,
    payment_from_strings,
    payment_to_strings,
    statuses,
    sum_delivered,
)
from mpp_proxy.state.redis_outbox import RedisOutbox

DEFAULT_PREFIX: Final = "mpp-proxy:"
_BATCH: Final = 500
_RETRIES: Final = 3

# Key layout under the prefix P:
#   P kv:<key>            string "<op id>\n<JSON value>" (pympp replay keys); PXAT expiry
#   P pay:<key>           hash, one ledger row (every Payment field as a string, plus `op`)
#   P pays                zset of all row keys, score created_at (list newest first)
#   P status:<status>     zset of row keys in that status, score created_at
#   P owner:<owner>       set of in_flight and pending row keys held by that owner (renew_leases)
#   P credits             zset of credited row keys, score credit_until (forfeit sweep)
#   P outbox:<id>         hash, one webhook delivery (OutboxEntry fields)
#   P outbox              zset of delivery ids, score due_at
# Every ledger change runs as one Lua script, so the row and its index entries change together
# and no other client sees a half-done transition. Scripts build index key names themselves,
# so Redis Cluster is not supported (one primary, optionally with replicas/Sentinel).

# Rows leave Redis as one JSON string (cjson, built into Redis's Lua): redis-py's pure-Python
# reply parser costs ~10 us per element, so a 19-field HGETALL reply took ~200 us to read.
_LUA_ROW_JSON: Final = """
local function row_json(k)
  local f = redis.call('HGETALL', k)
  if #f == 0 then return false end
  local m = {}
  for i = 1, #f, 2 do m[f[i]] = f[i + 1] end
  return cjson.encode(m)
end
"""

_LUA_REINDEX: Final = (
    _LUA_ROW_JSON
    + """
local function held(status) return status == 'in_flight' or status == 'pending' end
local function reindex(P, key, old_status, old_owner, new_status, new_owner, created, credit)
  if old_status ~= new_status then
    if old_status then redis.call('ZREM', P .. 'status:' .. old_status, key) end
    redis.call('ZADD', P .. 'status:' .. new_status, created, key)
  end
  if held(old_status) and (not held(new_status) or old_owner ~= new_owner) then
    redis.call('SREM', P .. 'owner:' .. old_owner, key)
  end
  if held(new_status) then
    redis.call('SADD', P .. 'owner:' .. new_owner, key)
  end
  if new_status == 'credited' then
    redis.call('ZADD', P .. 'credits', credit, key)
  elseif old_status == 'credited' then
    redis.call('ZREM', P .. 'credits', key)
  end
end
"""
)

# redis-py retries a command after a connection error, and the first attempt may already have
# run. Writes therefore carry a random operation id stored with what they wrote: a retry that
# finds its own id reports the first attempt's success instead of "already there".

# KEYS[1] row hash; ARGV: prefix, key, op id, then field/value pairs of the whole row.
_LUA_INSERT: Final = (
    _LUA_REINDEX
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then
  if redis.call('HGET', KEYS[1], 'op') == ARGV[3] then return false end
  return row_json(KEYS[1])
end
redis.call('HSET', KEYS[1], 'op', ARGV[3], unpack(ARGV, 4))
local row = {}
for i = 4, #ARGV, 2 do row[ARGV[i]] = ARGV[i + 1] end
redis.call('ZADD', ARGV[1] .. 'pays', row['created_at'], ARGV[2])
reindex(ARGV[1], ARGV[2], nil, nil, row['status'], row['owner'], row['created_at'],
        row['credit_until'])
return false
"""
)

# KEYS[1] row hash; ARGV: prefix, key, new status, updated_at, expected statuses joined by ',',
# check owner ('1'/'0'), expected owner, lease bound ('' when none), op id, then field/value
# pairs.
_LUA_TRANSITION: Final = (
    _LUA_REINDEX
    + """
if redis.call('HGET', KEYS[1], 'op') == ARGV[9] then
  return row_json(KEYS[1])
end
local cur = redis.call('HMGET', KEYS[1], 'status', 'owner', 'lease_until', 'created_at',
                       'credit_until')
local status, owner = cur[1], cur[2]
if not status then return false end
local ok = false
for s in string.gmatch(ARGV[5], '[^,]+') do
  if s == status then ok = true end
end
if not ok then return false end
if ARGV[6] == '1' and owner ~= ARGV[7] then return false end
if ARGV[8] ~= '' and held(status)
   and not (tonumber(cur[3]) < tonumber(ARGV[8])) then
  return false
end
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'updated_at', ARGV[4], 'op', ARGV[9])
local new_owner, credit = owner, cur[5]
if #ARGV >= 10 then
  redis.call('HSET', KEYS[1], unpack(ARGV, 10))
  for i = 10, #ARGV, 2 do
    if ARGV[i] == 'owner' then new_owner = ARGV[i + 1] end
    if ARGV[i] == 'credit_until' then credit = ARGV[i + 1] end
  end
end
reindex(ARGV[1], ARGV[2], status, owner, ARGV[3], new_owner, cur[4], credit)
return row_json(KEYS[1])
"""
)

# KEYS[1] row hash.
_LUA_GET: Final = _LUA_ROW_JSON + "return row_json(KEYS[1])"

# KEYS[1] an index zset; ARGV: prefix, first rank, last rank. Newest first, as one JSON array.
_LUA_LIST: Final = (
    _LUA_ROW_JSON
    + """
local out = {}
for _, key in ipairs(redis.call('ZREVRANGE', KEYS[1], ARGV[2], ARGV[3])) do
  local row = row_json(ARGV[1] .. 'pay:' .. key)
  if row then out[#out + 1] = row end
end
return '[' .. table.concat(out, ',') .. ']'
"""
)

# KEYS[1] the delivered zset; ARGV: prefix, first rank, last rank.
# Amounts stay strings: Lua numbers are doubles and would round large base-unit sums.
_LUA_DELIVERED: Final = """
local out = {}
for _, key in ipairs(redis.call('ZRANGE', KEYS[1], ARGV[2], ARGV[3])) do
  local f = redis.call('HMGET', ARGV[1] .. 'pay:' .. key,
                       'service', 'route', 'method', 'currency', 'amount', 'status')
  if f[6] == 'delivered' then
    out[#out + 1] = cjson.encode({f[1], f[2], f[3], f[4], f[5]})
  end
end
return '[' .. table.concat(out, ',') .. ']'
"""

# KEYS[1] kv key; ARGV: op id, JSON value, PXAT milliseconds ('' for no expiry).
# Values are stored as "<op id>\n<JSON>".
_LUA_PUT_IF_ABSENT: Final = """
local cur = redis.call('GET', KEYS[1])
if cur then
  if string.sub(cur, 1, #ARGV[1] + 1) == ARGV[1] .. '\\n' then return 1 end
  return 0
end
if ARGV[3] == '' then
  redis.call('SET', KEYS[1], ARGV[1] .. '\\n' .. ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[1] .. '\\n' .. ARGV[2], 'PXAT', ARGV[3])
end
return 1
"""

# KEYS[1] row hash; ARGV: prefix, key, owner.
_LUA_DELETE: Final = """
local cur = redis.call('HMGET', KEYS[1], 'status', 'owner')
if (cur[1] ~= 'in_flight' and cur[1] ~= 'pending') or cur[2] ~= ARGV[3] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', ARGV[1] .. 'pays', ARGV[2])
redis.call('ZREM', ARGV[1] .. 'status:' .. cur[1], ARGV[2])
redis.call('SREM', ARGV[1] .. 'owner:' .. ARGV[3], ARGV[2])
return 1
"""

# KEYS[1] owner set; ARGV: prefix, owner, lease_until, updated_at.
_LUA_RENEW: Final = """
local n = 0
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local row = ARGV[1] .. 'pay:' .. key
  local cur = redis.call('HMGET', row, 'status', 'owner')
  if (cur[1] == 'in_flight' or cur[1] == 'pending') and cur[2] == ARGV[2] then
    redis.call('HSET', row, 'lease_until', ARGV[3], 'updated_at', ARGV[4])
    n = n + 1
  else
    redis.call('SREM', KEYS[1], key)
  end
end
return n
"""

# KEYS[1] credits zset; ARGV: prefix, now (exclusive bound), updated_at, batch size.
_LUA_FORFEIT: Final = """
local keys = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2], 'LIMIT', 0, ARGV[4])
local n = 0
for _, key in ipairs(keys) do
  local row = ARGV[1] .. 'pay:' .. key
  redis.call('ZREM', KEYS[1], key)
  if redis.call('HGET', row, 'status') == 'credited' then
    redis.call('HSET', row, 'status', 'forfeited', 'updated_at', ARGV[3])
    local created = redis.call('HGET', row, 'created_at')
    redis.call('ZREM', ARGV[1] .. 'status:credited', key)
    redis.call('ZADD', ARGV[1] .. 'status:forfeited', created, key)
    n = n + 1
  end
end
return {n, #keys}
"""


# KEYS[1] in_flight zset; ARGV: prefix, now (exclusive bound), credit_until, updated_at.
# In-flight rows are bounded by the requests being served, so one pass over them is short.
_LUA_CREDIT_ABANDONED: Final = (
    _LUA_REINDEX
    + """
local n = 0
for _, key in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local row = ARGV[1] .. 'pay:' .. key
  local cur = redis.call('HMGET', row, 'status', 'owner', 'lease_until', 'created_at')
  if cur[1] == 'in_flight' and tonumber(cur[3]) < tonumber(ARGV[2]) then
    redis.call('HSET', row, 'status', 'credited', 'owner', '', 'credit_until', ARGV[3],
               'updated_at', ARGV[4])
    reindex(ARGV[1], key, 'in_flight', cur[2], 'credited', '', cur[4], ARGV[3])
    n = n + 1
  end
end
return n
"""
)

# KEYS[1] pending zset; ARGV: prefix, now (exclusive bound), updated_at.
_LUA_RELEASE_ABANDONED: Final = (
    _LUA_REINDEX
    + """
local n = 0
for _, key in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local row = ARGV[1] .. 'pay:' .. key
  local cur = redis.call('HMGET', row, 'status', 'owner', 'lease_until', 'created_at')
  if cur[1] == 'pending' and tonumber(cur[3]) < tonumber(ARGV[2]) then
    redis.call('HSET', row, 'status', 'released', 'owner', '', 'updated_at', ARGV[3])
    reindex(ARGV[1], key, 'pending', cur[2], 'released', '', cur[4], '0')
    n = n + 1
  end
end
return n
"""
)


# KEYS[1] outbox zset; ARGV: prefix, id, then field/value pairs of the entry.
_LUA_OUTBOX_ADD: Final = """
local row = ARGV[1] .. 'outbox:' .. ARGV[2]
if redis.call('EXISTS', row) == 1 then return 0 end
redis.call('HSET', row, unpack(ARGV, 3))
local due = redis.call('HGET', row, 'due_at')
redis.call('ZADD', KEYS[1], due, ARGV[2])
return 1
"""

# KEYS[1] outbox zset; ARGV: prefix, now, until, limit. Claimed entries move to score `until`.
_LUA_OUTBOX_CLAIM: Final = """
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, ARGV[4])) do
  local row = ARGV[1] .. 'outbox:' .. id
  redis.call('ZADD', KEYS[1], ARGV[3], id)
  redis.call('HSET', row, 'due_at', ARGV[3])
  local f = redis.call('HMGET', row, 'target', 'body', 'attempts', 'created_at')
  out[#out + 1] = cjson.encode({id, f[1], f[2], f[3], ARGV[3], f[4]})
end
return '[' .. table.concat(out, ',') .. ']'
"""

# Rate buckets and spend counters (the admit stage), under the prefix P:
#   P rl:<key>            string, a bucket's theoretical arrival time (us, Redis's clock); PX
#   P sp:<key>            string, a spend counter (base units); PXAT the window's end
#   P spop:<op>           string, marks a spend already added (a retried call adds it once)
# KEYS: n bucket keys, then the spend keys; ARGV: n, then interval and capacity per bucket
# (us), then one allowance per spend key. Redis's own clock (TIME) is the one every instance
# shares. Integers stay below 2^53, exact in Lua's doubles. Returns {ok, used..., spent...}.
_LUA_TAKE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = tonumber(ARGV[1])
local out = {1}
local news = {}
for i = 1, n do
  local interval = tonumber(ARGV[2 * i])
  local capacity = tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  news[i] = tat + interval
  out[i + 1] = news[i] - now
  if news[i] - now > capacity then out[1] = 0 end
end
for j = n + 1, #KEYS do
  local spent = tonumber(redis.call('GET', KEYS[j]) or '0')
  out[j + 1] = spent
  if spent > tonumber(ARGV[2 * n + 1 + j - n]) then out[1] = 0 end
end
if out[1] == 1 then
  for i = 1, n do
    redis.call('SET', KEYS[i], string.format('%.0f', news[i]),
               'PX', math.floor((news[i] - now) / 1000) + 1)
  end
end
return out
"""

# KEYS: the counter, the op marker; ARGV: amount, PXAT milliseconds.
_LUA_ADD_SPENT: Final = """
if redis.call('SET', KEYS[2], '1', 'NX', 'PXAT', ARGV[2]) then
  redis.call('INCRBY', KEYS[1], ARGV[1])
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
end
return 1
"""


class RedisStore(RedisOutbox):
    """redis.asyncio client; every write and every row read is one Lua script (EVALSHA).

    Costs: every call is one round trip. `totals()` reads every delivered row, 500 per script
    run: O(delivered payments), meant for the `ledger` command, not for a request path.
    `renew_leases` touches only the owner's in-flight rows; `credit_abandoned` all in-flight
    rows (bounded by the requests being served).
    """

    __slots__ = ("_client", "_prefix", "_scripts", "_url")

    def __init__(self, url: str, *, key_prefix: str = DEFAULT_PREFIX) -> None:
        self._url = url
        self._prefix = key_prefix
        self._client: Any = None
        self._scripts: dict[str, Any] = {}

    def __repr__(self) -> str:
        from mpp_proxy.state import redact_url

        return f"RedisStore({redact_url(self._url)!r}, key_prefix={self._prefix!r})"

    async def open(self) -> None:
        if self._client is not None:
            return
        from redis.asyncio import BlockingConnectionPool, Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialWithJitterBackoff
        from redis.exceptions import ConnectionError, TimeoutError

        # Defaults; the URL's own query (?max_connections=..&socket_timeout=..) overrides them.
        pool = BlockingConnectionPool.from_url(
            self._url,
            decode_responses=True,
            # A burst of requests waits for a free connection instead of failing at the cap.
            max_connections=64,
            timeout=10,
            socket_connect_timeout=5,
            socket_timeout=5,
            # A pooled connection the server or a firewall closed while idle fails its next
            # command; retrying on a fresh connection hides that. Safe because every write is
            # idempotent under retry (operation ids, see above).
            retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.5), _RETRIES),
            retry_on_error=[ConnectionError, TimeoutError],
        )
        client = Redis.from_pool(pool)
        self._scripts = {
            "get": client.register_script(_LUA_GET),
            "list": client.register_script(_LUA_LIST),
            "delivered": client.register_script(_LUA_DELIVERED),
            "put_if_absent": client.register_script(_LUA_PUT_IF_ABSENT),
            "insert": client.register_script(_LUA_INSERT),
            "transition": client.register_script(_LUA_TRANSITION),
            "delete": client.register_script(_LUA_DELETE),
            "renew": client.register_script(_LUA_RENEW),
            "forfeit": client.register_script(_LUA_FORFEIT),
            "credit_abandoned": client.register_script(_LUA_CREDIT_ABANDONED),
            "take": client.register_script(_LUA_TAKE),
            "add_spent": client.register_script(_LUA_ADD_SPENT),
            "release_abandoned": client.register_script(_LUA_RELEASE_ABANDONED),
            "outbox_add": client.register_script(_LUA_OUTBOX_ADD),
            "outbox_claim": client.register_script(_LUA_OUTBOX_CLAIM),
        }
        self._client = client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    @property
    def _redis(self) -> Any:
        if self._client is None:
            raise RuntimeError("RedisStore used before open() or after close()")
        return self._client

    async def ping(self) -> bool:
        try:
            return bool(await self._redis.ping())
        except Exception:
            return False

    # ------------------------------------------------------------------ pympp KV

    def _kv(self, key: str) -> str:
        return f"{self._prefix}kv:{key}"

    async def get(self, key: str) -> Any | None:
        raw = await self._redis.get(self._kv(key))
        return None if raw is None else decode_value(raw.partition("\n")[2])

    async def put(self, key: str, value: Any) -> None:
        await self._redis.set(self._kv(key), f"{_op_id()}\n{encode_value(value)}")

    async def delete(self, key: str) -> None:
        await self._redis.delete(self._kv(key))

    async def put_if_absent(self, key: str, value: Any) -> bool:
        return await self._put_if_absent(key, value, "")

    async def put_if_absent_until(self, key: str, value: Any, expires_at: float) -> bool:
        """pympp's optional `ExpiringStore` call: like put_if_absent, gone after `expires_at`."""
        check_expiry(expires_at, time.time())
        return await self._put_if_absent(key, value, str(math.ceil(expires_at * 1000)))

    async def _put_if_absent(self, key: str, value: Any, pxat: str) -> bool:
        encoded = encode_value(value)
        got = await self._scripts_call("put_if_absent", [self._kv(key)], [_op_id(), encoded, pxat])
        return bool(got)

    # -------------------------------------------------------------------- ledger

    def _row(self, key: str) -> str:
        return f"{self._prefix}pay:{key}"

    async def insert_payment(self, payment: Payment) -> Payment | None:
        fields = payment_to_strings(payment)
        flat = [x for pair in fields.items() for x in pair]
        got = await self._scripts_call(
            "insert", [self._row(payment.key)], [self._prefix, payment.key, _op_id(), *flat]
        )
        return _from_json(got)

    async def get_payment(self, key: str) -> Payment | None:
        return _from_json(await self._scripts_call("get", [self._row(key)], []))

    async def transition(
        self,
        key: str,
        *,
        expect: tuple[PaymentStatus, ...],
        status: PaymentStatus,
        expect_owner: str | None = None,
        lease_expired_before: float | None = None,
        **changes: Any,
    ) -> Payment | None:
        allowed = statuses(expect)
        updates = coerce_changes(changes)
        args: list[str] = [
            self._prefix,
            key,
            PaymentStatus(status).value,
            repr(time.time()),
            ",".join(s.value for s in allowed),
            "0" if expect_owner is None else "1",
            expect_owner or "",
            "" if lease_expired_before is None else repr(float(lease_expired_before)),
            _op_id(),
        ]
        for name, value in updates.items():
            args.append(name)
            args.append(repr(value) if isinstance(value, float) else str(value))
        got = await self._scripts_call("transition", [self._row(key)], args)
        return _from_json(got)

    async def delete_payment(self, key: str, *, expect_owner: str) -> bool:
        got = await self._scripts_call(
            "delete", [self._row(key)], [self._prefix, key, expect_owner]
        )
        return bool(got)

    async def renew_leases(self, owner: str, lease_until: float) -> int:
        got = await self._scripts_call(
            "renew",
            [f"{self._prefix}owner:{owner}"],
            [self._prefix, owner, repr(float(lease_until)), repr(time.time())],
        )
        return int(got)

    async def forfeit_expired_credits(self, now: float) -> int:
        total = 0
        # Batches keep each script short: Redis runs nothing else while a script runs.
        while True:
            n, seen = await self._scripts_call(
                "forfeit",
                [f"{self._prefix}credits"],
                [self._prefix, repr(float(now)), repr(time.time()), str(_BATCH)],
            )
            total += int(n)
            if int(seen) < _BATCH:
                return total

    async def credit_abandoned(self, now: float, credit_until: float) -> int:
        got = await self._scripts_call(
            "credit_abandoned",
            [f"{self._prefix}status:in_flight"],
            [self._prefix, repr(float(now)), repr(float(credit_until)), repr(time.time())],
        )
        return int(got)

    async def release_abandoned(self, now: float) -> int:
        got = await self._scripts_call(
            "release_abandoned",
            [f"{self._prefix}status:pending"],
            [self._prefix, repr(float(now)), repr(time.time())],
        )
        return int(got)

    async def list_payments(
        self, *, status: PaymentStatus | None = None, limit: int = 100
    ) -> list[Payment]:
        if limit <= 0:
            return []
        index = (
            f"{self._prefix}pays"
            if status is None
            else f"{self._prefix}status:{PaymentStatus(status).value}"
        )
        got = await self._scripts_call("list", [index], [self._prefix, "0", str(limit - 1)])
        return [payment_from_strings(r) for r in decode_value(got)]

    async def totals(self) -> list[Totals]:
        rows: list[tuple[str, str, str, str, str]] = []
        index = f"{self._prefix}status:delivered"
        # Pages keep each script short: Redis serves no one else while a script runs.
        for start in itertools.count(0, _BATCH):
            got = decode_value(
                await self._scripts_call(
                    "delivered", [index], [self._prefix, str(start), str(start + _BATCH - 1)]
                )
            )
            rows.extend((s, r, m, c, a) for s, r, m, c, a in got)
            if start + _BATCH >= await self._redis.zcard(index):
                break
        return sum_delivered(rows)

    async def count_payments(self, status: PaymentStatus) -> int:
        return int(await self._redis.zcard(f"{self._prefix}status:{PaymentStatus(status).value}"))

    # -------------------------------------------------------------------- limits

    async def take(
        self,
        buckets: Sequence[str],
        specs: Sequence[BucketSpec],
        spend: Sequence[str] = (),
        allowances: Sequence[int] = (),
    ) -> Taken:
        prefix = self._prefix
        keys = [f"{prefix}rl:{k}" for k in buckets]
        keys += [f"{prefix}sp:{k}" for k in spend]
        args = [str(len(buckets))]
        for interval, capacity in specs:
            args += (str(interval), str(capacity))
        args += map(str, allowances)
        # A retry after a dropped reply may count this request twice in its buckets: at most
        # one request of the limit, on a connection failure; the decision stays atomic.
        got = await self._scripts_call("take", keys, args)
        n = len(buckets)
        return Taken(got[0] == 1, tuple(int(v) for v in got[1 : n + 1]), tuple(got[n + 1 :]))

    async def add_spent(self, key: str, amount: int, expires_at: float, op: str) -> None:
        prefix = self._prefix
        await self._scripts_call(
            "add_spent",
            [f"{prefix}sp:{key}", f"{prefix}spop:{op}"],
            [str(int(amount)), str(math.ceil(expires_at * 1000))],
        )

    async def _scripts_call(self, name: str, keys: list[str], args: list[str]) -> Any:
        self._redis  # noqa: B018 -- raises when not open
        return await self._scripts[name](keys=keys, args=args)


def _op_id() -> str:
    return os.urandom(8).hex()


def _from_json(got: Any) -> Payment | None:
    return payment_from_strings(decode_value(got)) if got else None
