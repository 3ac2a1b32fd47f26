"""Reading, replaying and purging a dead-letter list (``autoscaler dead-letter``).

The list is LPUSHed, so index 0 is the newest dead letter. Each entry is shown with the
reason, delivery count and time stored beside it (``keys.dead_reasons_for``,
``keys.dead_meta_for``); a message dead-lettered before those were kept has no count or
time. Replay and purge are one script each: atomic against consumers dead-lettering
meanwhile, and a replayed message starts again with no delivery counted.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from autoscaler import keys
from autoscaler.redisqueue import scripts
from autoscaler.redisqueue.scripts import translated


@dataclass(frozen=True)
class DeadLetter:
    index: int  # 0: the newest
    message: bytes
    reason: str | None
    deliveries: int | None
    dead_at: float | None  # Unix seconds

    @property
    def digest(self) -> str:
        return keys.message_digest(self.message)


@translated
async def length(redis: Redis, dead: str) -> int:
    return int(await redis.llen(dead))


@translated
async def read(redis: Redis, dead: str, first: int = 0, count: int = -1) -> list[DeadLetter]:
    """Entries ``first`` … ``first + count - 1`` (count -1: to the end), newest first."""
    last = -1 if count < 0 else first + count - 1
    messages = [m for m in await redis.lrange(dead, first, last) if isinstance(m, bytes)]
    if not messages:
        return []
    digests = [keys.message_digest(m) for m in messages]
    reasons = await redis.hmget(keys.dead_reasons_for(dead), digests)
    metas = await redis.hmget(keys.dead_meta_for(dead), digests)
    return [
        _entry(first + i, m, reasons[i], metas[i]) for i, m in enumerate(messages)
    ]


@translated
async def replay(redis: Redis, dead: str, queue: str, first: int, count: int, head: bool) -> int:
    """Move entries back to the queue, to its head (taken next) or its tail; how many."""
    keys_ = [dead, keys.dead_reasons_for(dead), keys.dead_meta_for(dead), queue]
    moved = await scripts.REPLAY(redis, keys_, [first, count, "head" if head else "tail"])
    return len(moved)


@translated
async def purge(redis: Redis, dead: str, first: int, count: int) -> int:
    """Delete entries and what is stored beside them; how many."""
    keys_ = [dead, keys.dead_reasons_for(dead), keys.dead_meta_for(dead)]
    return len(await scripts.PURGE(redis, keys_, [first, count]))


def _entry(index: int, message: bytes, reason: object, meta: object) -> DeadLetter:
    at, deliveries = None, None
    if isinstance(meta, bytes):
        parts = meta.decode("ascii", "replace").split()
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            at, deliveries = float(parts[0]), int(parts[1])
    text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else None
    return DeadLetter(index, message, text, deliveries, at)
