"""The Lua scripts behind ``autoscaler.redisqueue``, and redis-py error translation.

Every script runs atomically in Redis. KEYS and ARGV are listed above each one; the
Python wrappers in ``queue`` and ``registry`` pass them in that order.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

import redis.exceptions as rexc

from autoscaler.aio import guarded
from autoscaler.errors import QueueError, TransientQueueError
from autoscaler.redisconn import Script

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


# Lua helper: move message m from the processing list to the dead-letter list with reason,
# and when and after how many deliveries into the meta hash (KEYS[6]). KEYS[5] is the
# consumer's alone key: a convicted suspect frees its consumer.
_DEAD = """
local function dead(m, d, reason)
  redis.call('LPUSH', KEYS[2], m); redis.call('HSET', KEYS[3], d, reason)
  local n = redis.call('HGET', KEYS[4], d) or '0'
  redis.call('HSET', KEYS[6], d, redis.call('TIME')[1] .. ' ' .. n)
  redis.call('HDEL', KEYS[4], d)
  if redis.call('GET', KEYS[5]) == d then redis.call('DEL', KEYS[5]) end
end
"""
# KEYS: queue, processing, deliveries, quarantine, alone, journal, processed
# ARGV: token ('' = no journal), slot, ack (0/1), message, take (0/1)
# -> {removed, took[, message, count, alone]}; took is 'took', 'empty' (nothing to take),
#    'wait' (a suspect waits for this consumer to empty, or is held here alone), 'no'.
# With a token, a run whose token the journal already holds for the slot is a retry after
# a lost reply: it changes nothing and returns what the first run returned.
ACK_TAKE = Script("""
local q, p, dl, qr, al, jr = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local token, slot = ARGV[1], ARGV[2]
if token ~= '' and redis.call('HGET', jr, slot) == token then
  local r = redis.call('HMGET', jr, slot .. ':r', slot .. ':t', slot .. ':m', slot .. ':n',
                       slot .. ':a')
  if r[3] then return {tonumber(r[1]), r[2], r[3], tonumber(r[4]), tonumber(r[5])} end
  return {tonumber(r[1]), r[2]}
end
local removed = 0
if ARGV[3] == '1' then
  removed = redis.call('LREM', p, 1, ARGV[4])
  if removed == 1 then
    local d = redis.sha1hex(ARGV[4])
    redis.call('INCR', KEYS[7]); redis.call('HDEL', dl, d)
    if redis.call('GET', al) == d then redis.call('DEL', al) end
  end
end
local took, m, n, alone = 'no', false, 0, 0
if ARGV[5] == '1' then
  if redis.call('EXISTS', al) == 1 then
    took = 'wait'
  elseif redis.call('LLEN', qr) > 0 then
    if redis.call('LLEN', p) > 0 then
      took = 'wait'
    else
      m = redis.call('LMOVE', qr, p, 'RIGHT', 'LEFT'); alone = 1
      redis.call('SET', al, redis.sha1hex(m))
    end
  else
    m = redis.call('LMOVE', q, p, 'RIGHT', 'LEFT')
    if not m then took = 'empty' end
  end
  if m then took = 'took'; n = redis.call('HINCRBY', dl, redis.sha1hex(m), 1) end
end
if token ~= '' then
  redis.call('HSET', jr, slot, token, slot .. ':r', removed, slot .. ':t', took)
  if m then
    redis.call('HSET', jr, slot .. ':m', m, slot .. ':n', n, slot .. ':a', alone)
  else
    redis.call('HDEL', jr, slot .. ':m', slot .. ':n', slot .. ':a')
  end
end
if m then return {removed, took, m, n, alone} end
return {removed, took}
""")
# After a BLMOVE moved a message into the processing list: count the delivery, unless a
# suspect waits for this consumer or is held here alone: then return it to the queue head.
# KEYS: processing, deliveries, quarantine, alone, queue; ARGV: message -> count, 0 declined
TAKEN = Script("""
if redis.call('LPOS', KEYS[1], ARGV[1]) == false then return 0 end
if redis.call('EXISTS', KEYS[4]) == 1 or redis.call('LLEN', KEYS[3]) > 0 then
  redis.call('LREM', KEYS[1], 1, ARGV[1]); redis.call('RPUSH', KEYS[5], ARGV[1])
  return 0
end
return redis.call('HINCRBY', KEYS[2], redis.sha1hex(ARGV[1]), 1)
""")
# KEYS: processing, dead, reasons, deliveries, alone, meta; ARGV: message, reason, max (0: at once)
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
# KEYS: processing, queue, alone, quarantine, deliveries; ARGV: uncharge (0/1), messages...
# -> how many were still held and went back (a suspect held alone back to the quarantine).
# ``uncharge`` takes back the delivery counted when it was taken: it was never delivered.
# Idempotent: a retry finds nothing left to remove.
PUSH_BACK = Script("""
local n = 0
local suspect = redis.call('GET', KEYS[3])
for i = 2, #ARGV do
  if redis.call('LREM', KEYS[1], 1, ARGV[i]) == 1 then
    local d = redis.sha1hex(ARGV[i])
    if d == suspect then
      redis.call('RPUSH', KEYS[4], ARGV[i]); redis.call('DEL', KEYS[3])
    else
      redis.call('RPUSH', KEYS[2], ARGV[i])
    end
    if ARGV[1] == '1' and tonumber(redis.call('HGET', KEYS[5], d) or '0') > 0 then
      redis.call('HINCRBY', KEYS[5], d, -1)
    end
    n = n + 1
  end
end
return n
""")
# KEYS: processing, dead, reasons, deliveries, alone, meta, queue, lease, consumer,
#       consumers, quarantine, journal
# ARGV: max (0: a drain, push back unjudged), reason, force, consumer id, forget
# -> {requeued, dead, quarantined}
# After a crash (max > 0), who crashed it? With one message held, that one: charged as
# counted, dead-lettered at max, else quarantined. With several, nobody knows: each gets its
# delivery back and goes to the quarantine, to be delivered again alone. Idempotent: the
# processing list is deleted in the same run, so a retry finds nothing.
# LRANGE runs newest-taken first, so RPUSH leaves the oldest at the head, as it was.
REQUEUE = Script(_DEAD + """
if ARGV[3] ~= '1' and redis.call('EXISTS', KEYS[8]) == 1 then return {-1, 0, 0} end
local held = redis.call('LRANGE', KEYS[1], 0, -1)
local max = tonumber(ARGV[1])
local suspect = redis.call('GET', KEYS[5])
local requeued, deadn, quarantined = 0, 0, 0
for i = 1, #held do
  local m = held[i]
  local d = redis.sha1hex(m)
  local n = tonumber(redis.call('HGET', KEYS[4], d) or '0')
  if max == 0 then
    if d == suspect then
      redis.call('RPUSH', KEYS[11], m); quarantined = quarantined + 1
    else
      redis.call('RPUSH', KEYS[7], m); requeued = requeued + 1
    end
  elseif #held > 1 then
    if n > 0 then redis.call('HINCRBY', KEYS[4], d, -1) end
    redis.call('RPUSH', KEYS[11], m); quarantined = quarantined + 1
  elseif n >= max then
    dead(m, d, ARGV[2]); deadn = deadn + 1
  else
    redis.call('RPUSH', KEYS[11], m); quarantined = quarantined + 1
  end
end
redis.call('DEL', KEYS[1], KEYS[5], KEYS[12])
if ARGV[5] == '1' then redis.call('DEL', KEYS[9]); redis.call('SREM', KEYS[10], ARGV[4]) end
return {requeued, deadn, quarantined}
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
# Dead-letter tooling. KEYS: dead, reasons, meta, the run's op key (``keys.dead_op_for``)
# [, queue]. ARGV: index of the first (0: newest), how many (-1: to the end), then for
# REPLAY where ('head': taken next, 'tail': taken last). Takes LRANGE [first, first+n) of
# the list — the newest first — and removes exactly those. Returns how many were moved or
# purged; a retried run (same op key) returns the first run's count and changes nothing.
DEAD_OP_TTL_S = 300
_DEAD_SPAN = """
local done = redis.call('GET', KEYS[4])
if done then return tonumber(done) end
local first, n = tonumber(ARGV[1]), tonumber(ARGV[2])
local last = -1
if n >= 0 then last = first + n - 1 end
local span = redis.call('LRANGE', KEYS[1], first, last)
local kept = {}
if first > 0 then kept = redis.call('LRANGE', KEYS[1], 0, first - 1) end
local rest = {}
if last >= 0 then rest = redis.call('LRANGE', KEYS[1], last + 1, -1) end
redis.call('DEL', KEYS[1])
for i = 1, #kept do redis.call('RPUSH', KEYS[1], kept[i]) end
for i = 1, #rest do redis.call('RPUSH', KEYS[1], rest[i]) end
for i = 1, #span do
  local d = redis.sha1hex(span[i])
  if redis.call('LPOS', KEYS[1], span[i]) == false then
    redis.call('HDEL', KEYS[2], d); redis.call('HDEL', KEYS[3], d)
  end
end
"""
_DEAD_DONE = f"""
redis.call('SET', KEYS[4], #span, 'EX', {DEAD_OP_TTL_S})
return #span
"""
# Oldest of the span goes first: to the head it is pushed last (RPUSH: taken next).
REPLAY = Script(_DEAD_SPAN + """
if ARGV[3] == 'head' then
  for i = 1, #span do redis.call('RPUSH', KEYS[5], span[i]) end
else
  for i = #span, 1, -1 do redis.call('LPUSH', KEYS[5], span[i]) end
end
""" + _DEAD_DONE)
PURGE = Script(_DEAD_SPAN + _DEAD_DONE)
# The reaper's read: which registered consumers have no lease. No KEYS (the names are
# built here, as the controller's read script does): ARGV = consumers-set prefix and
# suffix, lease base, registry-hash base, the queue names joined by newlines, then any
# name that cannot be joined. A consumer's lease and hash are base .. slot .. id, where
# slot is ``{tag}:`` for a queue name with a Cluster hash tag (``keys.hash_tag``).
# -> {queue, id, {hash fields and values}, ...} for the dead ones only: a pass over
# 10,000 live queues returns an empty array (bench/bench_reaper.py).
_EACH_CONSUMER = """
local cp, cs = ARGV[1], ARGV[2]
-- visit(queue, slot, id) for every consumer registered on the queues named from
-- ARGV[first] on (joined by newlines, then any name that cannot be joined).
local function each_consumer(first, visit)
  local names = {}
  for q in string.gmatch(ARGV[first], '[^\\n]+') do names[#names + 1] = q end
  for i = first + 1, #ARGV do names[#names + 1] = ARGV[i] end
  for _, q in ipairs(names) do
    local slot = ''
    local s = string.find(q, '{', 1, true)
    if s then
      local e = string.find(q, '}', s + 1, true)
      if e and e > s + 1 then slot = '{' .. string.sub(q, s + 1, e - 1) .. '}:' end
    end
    local ids = redis.pcall('SMEMBERS', cp .. q .. cs)
    if not ids.err then
      for _, id in ipairs(ids) do visit(q, slot, id) end
    end
  end
end
"""
DEAD_CONSUMERS = Script(_EACH_CONSUMER + """
local lb, hb = ARGV[3], ARGV[4]
local out = {}
each_consumer(5, function(q, slot, id)
  if redis.call('EXISTS', lb .. slot .. id) == 0 then
    out[#out + 1] = q; out[#out + 1] = id
    out[#out + 1] = redis.call('HGETALL', hb .. slot .. id)
  end
end)
return out
""")
# A new leader's check for drains a dead leader left unfinished: which registered
# consumers are told ``drain``. No KEYS, names built as in DEAD_CONSUMERS: ARGV =
# consumers-set prefix and suffix, registry-hash base, the command field, the drain
# value, the queue names joined by newlines, then any name that cannot be joined.
# -> {queue, id, ...} for those told to drain only: usually an empty array.
TOLD_TO_DRAIN = Script(_EACH_CONSUMER + """
local hb, field, drain = ARGV[3], ARGV[4], ARGV[5]
local out = {}
each_consumer(6, function(q, slot, id)
  if redis.call('HGET', hb .. slot .. id, field) == drain then
    out[#out + 1] = q; out[#out + 1] = id
  end
end)
return out
""")
