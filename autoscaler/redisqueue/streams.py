"""Redis Streams as the sidecar's second queue backend: the operations, each idempotent.

Terms (Redis's own): a *stream* holds *entries* (an id and field-value pairs); a *consumer
group* hands each entry to one *consumer* (``XREADGROUP … >``) and keeps it in the group's
*PEL* (pending entries list) with its owner, its idle time and its *delivery count* until
the entry is acknowledged (``XACK``). The sidecar is one consumer, named by its consumer id
(the pod name). Here a *delivery count* is the PEL's, per entry id: two entries with the
same body have counts of their own (the list backend counts per body digest).

Lifecycle of an entry, and who charges a delivery:

- ``read_new`` (``XREADGROUP >``): delivery 1.
- ``settle(…, fail)`` after an answered failure: the PEL count becomes the next delivery's
  number (``XCLAIM … RETRYCOUNT n JUSTID``, compare-and-set on the count, so a retry after
  a lost reply charges once), or at ``max_deliveries`` the entry is dead-lettered.
- ``settle(…, reject)``: dead-lettered now (a 4xx verdict, an oversized entry).
- ``dead-lettering`` is ``XADD <stream>:dead`` (the reason, id, group, deliveries, time,
  then the entry's own fields) and ``XACK`` in one script: a retry finds the entry no
  longer pending and does nothing (``GONE``), so an entry is dead-lettered once.
- ``ack``: ``XACK`` and, only when it acknowledged something, ``INCR`` of the processed
  counter: a retry counts nothing twice.
- ``touch``: while held (processing, retrying, waiting out a processor outage) the
  consumer resets its entries' idle time every heartbeat (``XCLAIM … JUSTID``, no charge,
  only entries it still owns). So an entry goes idle only when its consumer is gone.
- ``hand_back`` (a drain): mark every entry this consumer owns idle at once so that the
  next ``claim`` anywhere takes it, uncharged (count − 1, as the claim adds one back).
  Idempotent: an entry already marked is skipped.
- ``claim``: a handed-back entry is taken by any consumer (count + 1). An entry idle for
  ``min_idle_ms`` that was not handed back belongs to a consumer that is gone (it crashed).
  *The poison rule*, the list backend's (docs/reliability.md): once everything that
  consumer holds is idle, it is *judged* together — one entry held is the suspect and
  charged (count + 1), several held are not (count kept) — and put in the *quarantine*
  (``keys.stream_quarantine_key``). A quarantined entry is claimed only by a consumer that
  holds nothing (verdict ``alone``), which then takes nothing else until it is settled; a
  consumer holding entries is told to ``wait`` (read nothing new) while the quarantine is
  not empty. So a crash convicts only an entry delivered alone, and innocent neighbours
  are never charged for it; a suspect whose count passes the maximum is dead-lettered
  unsent by the caller.
- ``recover`` (a start under the same consumer id): judge what the previous incarnation
  held, at once. The judgement marks the entries handed back in the same script, so a
  retry, or another consumer's claim, finds nothing left to judge.
- A take or claim retried after a lost reply may leave an entry in our PEL that no slot
  holds: the heartbeat's ``touch`` hands it back uncharged once it has sat there a while.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from redis import exceptions as rexc
from redis.asyncio import Redis

from autoscaler import keys
from autoscaler.redisconn import Script
from autoscaler.redisqueue.scripts import translated

# The idle time (ms) a hand-back sets: far beyond any --claim-min-idle, below the clock.
HANDED_BACK_IDLE_MS = 10**12
# The dead-letter entry's own fields, before the original entry's fields.
DEAD_FIELDS = ("dead-id", "dead-reason", "dead-deliveries", "dead-group", "dead-at")


@dataclass(frozen=True)
class StreamKeys:
    """What one stream consumer works on."""

    stream: str
    group: str
    consumer_id: str
    dead_letter: str = ""  # "" means keys.dead_letter_key(stream): ``<stream>:dead``

    @property
    def dead(self) -> str:
        return self.dead_letter or keys.dead_letter_key(self.stream)

    @property
    def quarantine(self) -> str:
        return keys.stream_quarantine_key(self.stream, self.group)


@dataclass(frozen=True)
class Entry:
    """One delivery of a stream entry: its id, fields and delivery count (from the PEL)."""

    entry_id: str
    fields: tuple[tuple[bytes, bytes], ...]
    count: int

    @property
    def body(self) -> bytes:
        """What the processor receives: the value of a one-field entry; otherwise a JSON
        object of the fields (bytes decoded as UTF-8, invalid sequences replaced)."""
        if len(self.fields) == 1:
            return self.fields[0][1]
        return json.dumps(
            {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in self.fields}
        ).encode()


class Settled(StrEnum):
    RETRY = "retry"  # charged: deliver again with the returned count
    DEAD = "dead"  # dead-lettered (and acknowledged)
    GONE = "gone"  # no longer ours: acknowledged, claimed by another consumer, or deleted


# Lua helper: dead-letter entry id of stream KEYS[1] (group g) into KEYS[2], then XACK.
_DEAD = """
local function dead(s, g, id, reason, n)
  local e = redis.call('XRANGE', s, id, id)
  local args = {'dead-id', id, 'dead-reason', reason, 'dead-deliveries', n, 'dead-group', g,
                'dead-at', redis.call('TIME')[1]}
  if e[1] then for _, v in ipairs(e[1][2]) do args[#args + 1] = v end end
  redis.call('XADD', KEYS[2], '*', unpack(args))
  redis.call('XACK', s, g, id)
end
"""

# KEYS: stream, dead. ARGV: group, consumer, id, mode (fail|reject), count seen, max, reason.
SETTLE = Script(
    _DEAD
    + """
local s, g, c, id = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local seen, max = tonumber(ARGV[5]), tonumber(ARGV[6])
local p = redis.call('XPENDING', s, g, id, id, 1)[1]
if not p or p[2] ~= c then return {'gone', 0} end
local n = tonumber(p[4])
if ARGV[4] == 'reject' then dead(s, g, id, ARGV[7], n); return {'dead', n} end
if n > seen then return {'retry', n} end
if n >= max then dead(s, g, id, ARGV[7], n); return {'dead', n} end
redis.call('XCLAIM', s, g, c, 0, id, 'RETRYCOUNT', n + 1, 'JUSTID')
return {'retry', n + 1}
"""
)

# KEYS: stream, processed counter. ARGV: group, id.
ACK = Script(
    """
local n = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if n == 1 then redis.call('INCR', KEYS[2]) end
return n
"""
)

# Lua helpers over stream s = KEYS[1], group g = ARGV[1], the quarantine set qr = KEYS[2]
# and the hand-back idle time ``handed``. ``held(o)``: what consumer o holds, i.e. its
# pending entries not handed back (a handed-back one waits for any claim). ``judge(h)``:
# o is gone holding h: mark each handed back and quarantined; one held is the suspect and
# charged (count + 1), several held are not (count kept). ``take(id, n)``: claim it for
# consumer c with count n; its fields, or nil when the entry was deleted.
_JUDGE = """
local s, qr, g = KEYS[1], KEYS[2], ARGV[1]
local function held(o, handed)
  local out = {}
  for _, p in ipairs(redis.call('XPENDING', s, g, '-', '+', 10000, o)) do
    if tonumber(p[3]) < handed / 2 then out[#out + 1] = p end
  end
  return out
end
local function judge(o, h, handed)
  for _, p in ipairs(h) do
    local n = tonumber(p[4])
    if #h == 1 then n = n + 1 end
    redis.call('XCLAIM', s, g, o, 0, p[1], 'IDLE', handed, 'RETRYCOUNT', n, 'JUSTID')
    redis.call('SADD', qr, p[1])
  end
end
local function take(c, id, n)
  local r = redis.call('XCLAIM', s, g, c, 0, id, 'RETRYCOUNT', n)
  if type(r[1]) == 'table' then return r[1][2] end
  return nil
end
"""

# KEYS: stream. ARGV: group, consumer, orphan idle ms, hand-back idle ms, ids… Resets the
# idle time of the ids it still owns; an entry it owns that no slot holds (the reply of
# its read or claim was lost: never sent), idle for the orphan time, is handed back
# uncharged. -> ids touched.
TOUCH = Script(
    """
local s, g, c = KEYS[1], ARGV[1], ARGV[2]
local orphan, handed = tonumber(ARGV[3]), tonumber(ARGV[4])
local mine, n = {}, 0
for i = 5, #ARGV do mine[ARGV[i]] = true end
for _, p in ipairs(redis.call('XPENDING', s, g, '-', '+', 10000, c)) do
  local idle = tonumber(p[3])
  if mine[p[1]] then
    redis.call('XCLAIM', s, g, c, 0, p[1], 'JUSTID'); n = n + 1
  elseif idle >= orphan and idle < handed / 2 then
    local n = math.max(tonumber(p[4]) - 1, 0)
    redis.call('XCLAIM', s, g, c, 0, p[1], 'IDLE', handed, 'RETRYCOUNT', n, 'JUSTID')
  end
end
return n
"""
)

# KEYS: stream. ARGV: group, consumer, idle ms, uncharge (1|0), max entries[, ids…].
# With ids, only those (a take declined because a suspect is held alone).
HAND_BACK = Script(
    """
local s, g, c, idle = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local only = nil
if #ARGV > 5 then only = {}; for i = 6, #ARGV do only[ARGV[i]] = true end end
local n = 0
for _, p in ipairs(redis.call('XPENDING', s, g, '-', '+', tonumber(ARGV[5]), c)) do
  if tonumber(p[3]) < idle / 2 and (only == nil or only[p[1]]) then
    local count = tonumber(p[4])
    if ARGV[4] == '1' and count > 0 then count = count - 1 end
    redis.call('XCLAIM', s, g, c, 0, p[1], 'IDLE', idle, 'RETRYCOUNT', count, 'JUSTID')
    n = n + 1
  end
end
return n
"""
)

# KEYS: stream, quarantine. ARGV: group, consumer, hand-back idle ms. A start under a
# consumer id: judge what the previous incarnation held. -> how many were quarantined.
RECOVER = Script(
    _JUDGE
    + """
local h = held(ARGV[2], tonumber(ARGV[3]))
judge(ARGV[2], h, tonumber(ARGV[3]))
return #h
"""
)

# KEYS: stream, quarantine. ARGV: group, consumer, min idle ms, cursor, scan size,
# hand-back idle ms. -> {verdict, next cursor[, id, count, fields]}; verdict:
#   'alone': a quarantined entry, to be processed with nothing else held (count as
#            judged); only given to a consumer holding nothing;
#   'took':  a handed-back entry (Redis's count + 1);
#   'wait':  the quarantine waits for this consumer to hold nothing: take nothing new;
#   'none':  nothing claimable in this part of the scan.
# An idle entry not handed back belongs to a consumer that is gone; once everything that
# consumer holds is idle ``min idle`` (entries taken after its last touch included), all of
# it is judged at once, so a claim never sees part of a crashed consumer's hand.
CLAIM = Script(
    _JUDGE
    + """
local c, min, cursor = ARGV[2], tonumber(ARGV[3]), ARGV[4]
local size, handed = tonumber(ARGV[5]), tonumber(ARGV[6])
local function alone(nextc)
  if redis.call('SCARD', qr) == 0 then return nil end
  if #held(c, handed) > 0 then return {'wait', nextc} end
  for _, id in ipairs(redis.call('SMEMBERS', qr)) do
    redis.call('SREM', qr, id)
    local p = redis.call('XPENDING', s, g, id, id, 1)[1]
    if p then
      local f = take(c, id, tonumber(p[4]))
      if f then return {'alone', nextc, id, p[4], f} end
    end
  end
  return nil
end
local r = alone(cursor)
if r then return r end
local ps = redis.call('XPENDING', s, g, 'IDLE', min, cursor, '+', size)
local nextc = '0-0'
if #ps == size then nextc = '(' .. ps[#ps][1] end
for _, p in ipairs(ps) do
  local id, n = p[1], tonumber(p[4])
  if tonumber(p[3]) >= handed / 2 then
    local f = take(c, id, n + 1)
    if f then return {'took', nextc, id, n + 1, f} end
  else
    local h, fresh = held(p[2], handed), false
    for _, q in ipairs(h) do if tonumber(q[3]) < min then fresh = true end end
    if not fresh then
      judge(p[2], h, handed)
      r = alone(nextc)
      if r then return r end
    end
  end
end
return {'none', nextc}
"""
)


def _pairs(flat: Sequence[Any]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((bytes(flat[i]), bytes(flat[i + 1])) for i in range(0, len(flat) - 1, 2))


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


@translated
async def ensure_group(redis: Redis, k: StreamKeys) -> bool:
    """Create the group at the stream's first entry (and the stream); False if it existed."""
    try:
        await redis.xgroup_create(k.stream, k.group, id="0", mkstream=True)
    except rexc.ResponseError as e:
        if "BUSYGROUP" not in str(e):
            raise
        return False
    return True


@translated
async def read_new(redis: Redis, k: StreamKeys, block_ms: int) -> Entry | None:
    """One never-delivered entry (delivery 1), waiting up to ``block_ms``; None if none."""
    reply: Any = await redis.xreadgroup(
        k.group, k.consumer_id, {k.stream: ">"}, count=1, block=max(1, block_ms)
    )
    if not reply:
        return None
    entries = reply[0][1]
    if not entries:
        return None
    entry_id, fields = entries[0]
    flat = [x for pair in (fields or {}).items() for x in pair]
    return Entry(_text(entry_id), _pairs(flat), 1)


class Claimed(StrEnum):
    ALONE = "alone"  # a quarantined entry: process it with nothing else held
    TOOK = "took"  # a handed-back entry
    WAIT = "wait"  # the quarantine waits for this consumer to hold nothing: take nothing
    NONE = "none"  # nothing claimable in this part of the scan


@translated
async def claim(
    redis: Redis, k: StreamKeys, min_idle_ms: int, cursor: str, scan: int = 10
) -> tuple[Claimed, str, Entry | None]:
    """(verdict, next cursor, the entry now ours) — see ``CLAIM``; cursor "0-0": a pass
    over the pending entries ended."""
    reply = await CLAIM(
        redis, [k.stream, k.quarantine],
        [k.group, k.consumer_id, min_idle_ms, cursor, scan, HANDED_BACK_IDLE_MS],
    )  # fmt: skip
    verdict, next_cursor = Claimed(_text(reply[0])), _text(reply[1])
    if len(reply) < 5:
        return verdict, next_cursor, None
    return verdict, next_cursor, Entry(_text(reply[2]), _pairs(reply[4] or []), int(reply[3]))


@translated
async def recover(redis: Redis, k: StreamKeys) -> int:
    """A start under this consumer id: quarantine what a previous incarnation held (one
    entry charged, several not); how many."""
    args = [k.group, k.consumer_id, HANDED_BACK_IDLE_MS]
    return int(await RECOVER(redis, [k.stream, k.quarantine], args))


@translated
async def ack(redis: Redis, k: StreamKeys, entry_id: str) -> bool:
    """Acknowledge after a 2xx; False when it was no longer pending (acked already)."""
    return bool(await ACK(redis, [k.stream, keys.processed_key(k.stream)], [k.group, entry_id]))


@translated
async def settle(
    redis: Redis, k: StreamKeys, entry: Entry, *, reject: bool, max_deliveries: int, reason: str
) -> tuple[Settled, int]:
    """After an answered failure (``reject`` False) or a verdict (True): (outcome, count)."""
    args = [k.group, k.consumer_id, entry.entry_id, "reject" if reject else "fail",
            entry.count, max_deliveries, reason]  # fmt: skip
    verdict, count = await SETTLE(redis, [k.stream, k.dead], args)
    return Settled(_text(verdict)), int(count)


@translated
async def touch(redis: Redis, k: StreamKeys, entry_ids: Sequence[str], orphan_ms: int) -> int:
    """Reset the idle time of the entries we still own; hand back, uncharged, those we own
    that no slot holds, idle ``orphan_ms`` (a read or claim whose reply was lost); how
    many touched."""
    args = [k.group, k.consumer_id, orphan_ms, HANDED_BACK_IDLE_MS, *entry_ids]
    return int(await TOUCH(redis, [k.stream], args))


@translated
async def hand_back(
    redis: Redis,
    k: StreamKeys,
    *,
    uncharge: bool,
    limit: int = 10_000,
    entry_ids: Sequence[str] = (),
) -> int:
    """Make every entry we own (or only ``entry_ids``) claimable at once; how many."""
    args = [k.group, k.consumer_id, HANDED_BACK_IDLE_MS, int(uncharge), limit, *entry_ids]
    return int(await HAND_BACK(redis, [k.stream], args))


# KEYS: a stream. ARGV: start, end, count. XRANGE as raw arrays (redis-py would fold the
# fields into a dict, losing a repeated name; a dead letter may repeat ours).
RANGE = Script("return redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2], 'COUNT', ARGV[3])")


@translated
async def read_range(
    redis: Redis, stream: str, start: str = "-", end: str = "+", count: int = 1000
) -> list[tuple[str, tuple[tuple[bytes, bytes], ...]]]:
    """Entries of ``stream`` from ``start`` to ``end`` (inclusive), fields in order."""
    reply = await RANGE(redis, [stream], [start, end, count])
    return [(_text(i), _pairs(f)) for i, f in reply]


def dead_letter_fields(
    pairs: Sequence[tuple[bytes, bytes]],
) -> tuple[dict[str, str], list[tuple[bytes, bytes]]]:
    """A dead-letter entry's (our fields, the original entry's fields)."""
    pairs = list(pairs)
    ours = {_text(k): _text(v) for k, v in pairs[: len(DEAD_FIELDS)]}
    return ours, pairs[len(DEAD_FIELDS) :]
