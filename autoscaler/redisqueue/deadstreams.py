"""The dead-letter stream of ``consume --stream`` (``autoscaler dead-letter --stream``).

A dead letter is an entry of ``<stream>:dead`` whose first fields are ours
(``streams.DEAD_FIELDS``: the original id, reason, deliveries, group, time) followed by the
original entry's fields. Index 0 is the newest. Replay is one script per call: atomic
against consumers dead-lettering meanwhile, and idempotent (a replayed dead letter is gone).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from redis.asyncio import Redis

from autoscaler.redisconn import Script
from autoscaler.redisqueue.scripts import translated
from autoscaler.redisqueue.streams import DEAD_FIELDS, Entry, _pairs, _text, dead_letter_fields


@dataclass(frozen=True)
class DeadEntry:
    """One entry of a dead-letter stream: its own id, our fields, the original's fields."""

    index: int  # 0: the newest
    dead_entry_id: str
    meta: dict[str, str]
    fields: tuple[tuple[bytes, bytes], ...]

    @property
    def entry_id(self) -> str:
        """The original entry's id in its stream."""
        return self.meta.get("dead-id", "")

    @property
    def body(self) -> bytes:
        return Entry(self.entry_id, self.fields, 0).body


# KEYS: a stream. ARGV: count. The newest entries first, raw arrays (see RANGE).
NEWEST = Script("return redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', ARGV[1])")

# KEYS: dead stream, original stream. ARGV: dead entry ids. Each still there goes back to
# the end of the stream as a new entry (its original fields, no delivery counted) and
# leaves the dead stream, atomically: a retry finds it gone and replays nothing twice.
REPLAY = Script(
    f"""
local n = 0
for i = 1, #ARGV do
  local e = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])[1]
  if e then
    local f, args = e[2], {{}}
    for j = {2 * len(DEAD_FIELDS) + 1}, #f do args[#args + 1] = f[j] end
    if #args > 0 then redis.call('XADD', KEYS[2], '*', unpack(args)) end
    redis.call('XDEL', KEYS[1], ARGV[i]); n = n + 1
  end
end
return n
"""
)


@translated
async def read_dead(redis: Redis, dead: str, limit: int) -> list[DeadEntry]:
    """The newest ``limit`` dead letters, newest first."""
    reply = await NEWEST(redis, [dead], [limit])
    out = []
    for index, (entry_id, flat) in enumerate(reply):
        meta, fields = dead_letter_fields(_pairs(flat))
        out.append(DeadEntry(index, _text(entry_id), meta, tuple(fields)))
    return out


@translated
async def dead_count(redis: Redis, dead: str) -> int:
    return int(await redis.xlen(dead))


@translated
async def replay_dead(redis: Redis, dead: str, stream: str, dead_entry_ids: Sequence[str]) -> int:
    """Move these dead letters back to ``stream`` as new entries; how many moved."""
    if not dead_entry_ids:
        return 0
    return int(await REPLAY(redis, [dead, stream], list(dead_entry_ids)))


@translated
async def purge_dead(redis: Redis, dead: str, dead_entry_ids: Sequence[str]) -> int:
    return int(await redis.xdel(dead, *dead_entry_ids)) if dead_entry_ids else 0
