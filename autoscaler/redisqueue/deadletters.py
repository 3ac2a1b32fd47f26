"""Reading, replaying and purging a dead-letter list (``autoscaler dead-letter``).

The list is LPUSHed, so index 0 is the newest dead letter. Each entry is shown with the
reason, delivery count and time stored beside it (``keys.dead_reasons_for``,
``keys.dead_meta_for``); a message dead-lettered before those were kept has no count or
time. Replay and purge are one script each: atomic against consumers dead-lettering
meanwhile, and a replayed message starts again with no delivery counted.
"""

from __future__ import annotations

import uuid
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
    keys_ = [*_span_keys(dead), queue]
    return int(await scripts.REPLAY(redis, keys_, [first, count, "head" if head else "tail"]))


@translated
async def purge(redis: Redis, dead: str, first: int, count: int) -> int:
    """Delete entries and what is stored beside them; how many."""
    return int(await scripts.PURGE(redis, _span_keys(dead), [first, count]))


def _span_keys(dead: str) -> list[str]:
    """A fresh token per call: redis-py's own retry of the same call reuses it."""
    op = keys.dead_op_for(dead, uuid.uuid4().hex)
    return [dead, keys.dead_reasons_for(dead), keys.dead_meta_for(dead), op]


def _entry(index: int, message: bytes, reason: object, meta: object) -> DeadLetter:
    at, deliveries = None, None
    if isinstance(meta, bytes):
        parts = meta.decode("ascii", "replace").split()
        if len(parts) == 2 and all(p.isdigit() for p in parts):
            at, deliveries = float(parts[0]), int(parts[1])
    text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else None
    return DeadLetter(index, message, text, deliveries, at)
