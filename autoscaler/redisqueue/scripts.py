"""The Lua scripts behind ``autoscaler.redisqueue``, and redis-py error translation.

Every script runs atomically in Redis. KEYS and ARGV are listed above each one; the
Python wrappers in ``queue`` and ``registry`` pass them in that order.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import redis.exceptions as rexc
from redis.asyncio import Redis

from autoscaler.aio import guarded
from autoscaler.errors import QueueError, TransientQueueError

P = ParamSpec("P")
T = TypeVar("T")
_TRANSIENT = (rexc.ConnectionError, rexc.TimeoutError, rexc.TryAgainError, rexc.ReadOnlyError)


def translated(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Re-raise redis-py errors as ours, so no ``redis.*`` exception escapes this module."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await guarded(fn(*args, **kwargs))
        except _TRANSIENT as e:
            raise TransientQueueError(f"{fn.__name__}: redis: {e}") from e
        except rexc.RedisError as e:
            raise QueueError(f"{fn.__name__}: redis: {e}") from e

    return wrapper


class Script:
    """A Lua script run by EVALSHA, loaded on NOSCRIPT; not bound to one client."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, redis: Redis, keys_: list[str], args: list[Any]) -> Any:
        try:
            return await redis.evalsha(self.sha, len(keys_), *keys_, *args)
        except rexc.NoScriptError:
            return await redis.eval(self.source, len(keys_), *keys_, *args)


# Lua helper: move message m from the processing list to the dead-letter list with reason.
_DEAD = """
local function dead(m, d, reason)
  redis.call('LPUSH', KEYS[2], m); redis.call('HSET', KEYS[3], d, reason)
  redis.call('HDEL', KEYS[4], d)
end
"""
# KEYS: queue, processing, deliveries -> {message, count} | nil
TAKE = Script("""
local m = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
if not m then return false end
return {m, redis.call('HINCRBY', KEYS[3], redis.sha1hex(m), 1)}
""")
# KEYS: processing, processed, deliveries, queue; ARGV: message, take_next -> {removed[, m, n]}
ACK = Script("""
local removed = redis.call('LREM', KEYS[1], 1, ARGV[1])
if removed == 1 then
  redis.call('INCR', KEYS[2]); redis.call('HDEL', KEYS[3], redis.sha1hex(ARGV[1]))
end
if ARGV[2] ~= '1' then return {removed} end
local m = redis.call('LMOVE', KEYS[4], KEYS[1], 'RIGHT', 'LEFT')
if not m then return {removed} end
return {removed, m, redis.call('HINCRBY', KEYS[3], redis.sha1hex(m), 1)}
""")
# KEYS: processing, dead, reasons, deliveries; ARGV: message, reason, max (0: at once)
# -> 0 not held any more, 1 keep retrying, 2 dead-lettered
FAIL = Script(_DEAD + """
if redis.call('LPOS', KEYS[1], ARGV[1]) == false then return 0 end
local d = redis.sha1hex(ARGV[1])
local max = tonumber(ARGV[3])
if max > 0 and tonumber(redis.call('HGET', KEYS[4], d) or '0') < max then return 1 end
redis.call('LREM', KEYS[1], 1, ARGV[1]); dead(ARGV[1], d, ARGV[2])
return 2
""")
# KEYS: processing, deliveries; ARGV: message -> the new delivery count, 0 if not held
REDELIVER = Script("""
if redis.call('LPOS', KEYS[1], ARGV[1]) == false then return 0 end
return redis.call('HINCRBY', KEYS[2], redis.sha1hex(ARGV[1]), 1)
""")
# KEYS: processing, queue; ARGV: messages -> how many were still held and went back
PUSH_BACK = Script("""
local n = 0
for i = 1, #ARGV do
  if redis.call('LREM', KEYS[1], 1, ARGV[i]) == 1 then
    redis.call('RPUSH', KEYS[2], ARGV[i]); n = n + 1
  end
end
return n
""")
# KEYS: processing, dead, reasons, deliveries, queue, lease, consumer, consumers
# ARGV: max (0: never dead-letter), reason, force, consumer id, forget -> {requeued, dead}
# LRANGE runs newest-taken first, so RPUSH leaves the oldest at the head, as it was.
REQUEUE = Script(_DEAD + """
if ARGV[3] ~= '1' and redis.call('EXISTS', KEYS[6]) == 1 then return {-1, 0} end
local held = redis.call('LRANGE', KEYS[1], 0, -1)
local max = tonumber(ARGV[1])
local requeued, deadn = 0, 0
for i = 1, #held do
  local d = redis.sha1hex(held[i])
  if max > 0 and tonumber(redis.call('HGET', KEYS[4], d) or '0') >= max then
    dead(held[i], d, ARGV[2]); deadn = deadn + 1
  else
    redis.call('RPUSH', KEYS[5], held[i]); requeued = requeued + 1
  end
end
redis.call('DEL', KEYS[1])
if ARGV[5] == '1' then redis.call('DEL', KEYS[7]); redis.call('SREM', KEYS[8], ARGV[4]) end
return {requeued, deadn}
""")
# KEYS: consumer hash; ARGV: field, value -> 1 if the consumer is registered
SET_IF_EXISTS = Script("""
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]); return 1
""")
# KEYS: lease; ARGV: token -> 1 if this incarnation's lease was deleted
RELEASE = Script("""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
""")
