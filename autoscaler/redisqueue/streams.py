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
- ``claim`` (``XAUTOCLAIM``) takes entries idle for ``min_idle_ms`` from any consumer: a
  crashed one's. Redis charges the claim (count + 1): the entry was delivered and never
  settled, so a poison entry that kills its consumers ends dead-lettered.
- ``hand_back`` (a drain, or a start finding a previous incarnation's entries): mark every
  entry this consumer owns idle at once so that the next ``claim`` anywhere takes it;
  a drain's hand-back is uncharged (count − 1, as the claim adds one back), a crashed
  incarnation's is charged. Idempotent: an entry already marked is skipped.
- A take retried after a lost reply may leave an entry in our PEL that no slot holds: it
  is never touched, goes idle, and is claimed (charged) like a crashed consumer's.
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

# KEYS: stream. ARGV: group, consumer, ids… Resets the idle time of the ids it still owns.
TOUCH = Script(
    """
local s, g, c, n = KEYS[1], ARGV[1], ARGV[2], 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', s, g, ARGV[i], ARGV[i], 1)[1]
  if p and p[2] == c then redis.call('XCLAIM', s, g, c, 0, ARGV[i], 'JUSTID'); n = n + 1 end
end
return n
"""
)

# KEYS: stream. ARGV: group, consumer, idle ms, uncharge (1|0), max entries.
HAND_BACK = Script(
    """
local s, g, c, idle = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local n = 0
for _, p in ipairs(redis.call('XPENDING', s, g, '-', '+', tonumber(ARGV[5]), c)) do
  if tonumber(p[3]) < idle / 2 then
    local count = tonumber(p[4])
    if ARGV[4] == '1' and count > 0 then count = count - 1 end
    redis.call('XCLAIM', s, g, c, 0, p[1], 'IDLE', idle, 'RETRYCOUNT', count, 'JUSTID')
    n = n + 1
  end
end
return n
"""
)

# KEYS: stream. ARGV: group, consumer, min idle ms, cursor, count. XAUTOCLAIM, then each
# claimed entry's delivery count from the PEL: {cursor, {id, count, fields}…}.
CLAIM = Script(
    """
local s, g, c = KEYS[1], ARGV[1], ARGV[2]
local r = redis.call('XAUTOCLAIM', s, g, c, ARGV[3], ARGV[4], 'COUNT', ARGV[5])
local out = {r[1]}
for _, e in ipairs(r[2]) do
  local p = redis.call('XPENDING', s, g, e[1], e[1], 1)[1]
  out[#out + 1] = {e[1], p and p[4] or 1, e[2]}
end
return out
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


@translated
async def claim(
    redis: Redis, k: StreamKeys, min_idle_ms: int, cursor: str, count: int = 1
) -> tuple[str, list[Entry]]:
    """(next cursor, entries idle ≥ ``min_idle_ms`` now ours, their counts charged)."""
    reply = await CLAIM(redis, [k.stream], [k.group, k.consumer_id, min_idle_ms, cursor, count])
    entries = [Entry(_text(i), _pairs(f or []), int(n)) for i, n, f in reply[1:]]
    return _text(reply[0]), entries


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
async def touch(redis: Redis, k: StreamKeys, entry_ids: Sequence[str]) -> int:
    """Reset the idle time of the entries we still own; how many."""
    if not entry_ids:
        return 0
    return int(await TOUCH(redis, [k.stream], [k.group, k.consumer_id, *entry_ids]))


@translated
async def hand_back(redis: Redis, k: StreamKeys, *, uncharge: bool, limit: int = 10_000) -> int:
    """Make every entry we own claimable at once; how many."""
    args = [k.group, k.consumer_id, HANDED_BACK_IDLE_MS, int(uncharge), limit]
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
