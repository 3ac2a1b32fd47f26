"""Reliable-queue operations on one consumer's keys: take, ack, fail, push back, requeue.

Used by the sidecar for every message and by the controller's reaper for dead consumers.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import NamedTuple

from redis.asyncio import Redis

from autoscaler import keys
from autoscaler.redisqueue import scripts
from autoscaler.redisqueue.scripts import translated


@dataclass(frozen=True)
class ConsumerKeys:
    """The keys one consumer works on: its queue, processing list and dead-letter list."""

    queue: str
    consumer_id: str
    dead_letter: str = ""  # "" means keys.dead_letter_key(queue)

    @property
    def processing(self) -> str:
        return keys.processing_key(self.queue, self.consumer_id)

    @property
    def dead(self) -> str:
        return self.dead_letter or keys.dead_letter_key(self.queue)

    def judged(self) -> list[str]:
        """KEYS of the scripts that may dead-letter: processing, dead, reasons, deliveries."""
        dead = self.dead
        return [self.processing, dead, keys.dead_reasons_for(dead), keys.deliveries_key(self.queue)]


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message as handed to a processor, with its delivery count (this one included)."""

    message: bytes
    count: int


class Verdict(IntEnum):
    """What ``fail`` decided for a message whose delivery failed."""

    GONE = 0  # not in the processing list any more (a reaper returned it): stop
    RETRY = 1  # below max deliveries: back off and ``redeliver``
    DEAD = 2  # moved to the dead-letter list


class Requeued(NamedTuple):
    requeued: int
    dead_lettered: int
    skipped_alive: bool = False  # the lease was alive: nothing done


@translated
async def take_now(redis: Redis, ck: ConsumerKeys) -> Delivery | None:
    """Move the head of the queue to the processing list and count it; None if empty."""
    found = await scripts.TAKE(redis, [ck.queue, ck.processing, keys.deliveries_key(ck.queue)], [])
    return None if found is None else Delivery(found[0], int(found[1]))


@translated
async def take(redis: Redis, ck: ConsumerKeys, timeout_s: float) -> Delivery | None:
    """Like ``take_now``, but waits up to ``timeout_s`` (> 0) for a message to arrive.

    Tries the non-blocking script first (one round trip that also counts the delivery);
    only an empty queue pays for BLMOVE plus a separate count.
    """
    found = await take_now(redis, ck)
    if found is not None:
        return found
    # BLMOVE takes a float timeout since Redis 6; redis-py's stub says int.
    message = await redis.blmove(ck.queue, ck.processing, timeout_s, "RIGHT", "LEFT")  # type: ignore[arg-type]
    if not isinstance(message, bytes):
        return None
    count = await redis.hincrby(keys.deliveries_key(ck.queue), keys.message_digest(message), 1)
    return Delivery(message, int(count))


@translated
async def ack(
    redis: Redis, ck: ConsumerKeys, message: bytes, *, take_next: bool = False
) -> tuple[bool, Delivery | None]:
    """Remove a processed message and count it; with ``take_next`` also take the next one.

    Returns (was still held, next delivery). Not held means a reaper already returned it
    to the queue: it will be processed again (at-least-once), and is not counted now.
    """
    keys_ = [ck.processing, keys.processed_key(ck.queue), keys.deliveries_key(ck.queue), ck.queue]
    reply = await scripts.ACK(redis, keys_, [message, "1" if take_next else "0"])
    following = Delivery(reply[1], int(reply[2])) if len(reply) == 3 else None
    return bool(reply[0]), following


@translated
async def fail(
    redis: Redis, ck: ConsumerKeys, message: bytes, reason: str, *, max_deliveries: int
) -> Verdict:
    """After a failed delivery: dead-letter it if it had ``max_deliveries`` (0: at once)."""
    return Verdict(int(await scripts.FAIL(redis, ck.judged(), [message, reason, max_deliveries])))


async def dead_letter(redis: Redis, ck: ConsumerKeys, message: bytes, reason: str) -> bool:
    """Dead-letter a held message at once (a 4xx, too large); False if it was not held."""
    return await fail(redis, ck, message, reason, max_deliveries=0) is Verdict.DEAD


@translated
async def redeliver(redis: Redis, ck: ConsumerKeys, message: bytes) -> int:
    """Count one more delivery of a held message; 0 if it is not held any more."""
    return int(
        await scripts.REDELIVER(redis, [ck.processing, keys.deliveries_key(ck.queue)], [message])
    )


@translated
async def push_back(redis: Redis, ck: ConsumerKeys, *messages: bytes) -> int:
    """Return held messages to the head of the queue; how many were still held."""
    if not messages:
        return 0
    return int(await scripts.PUSH_BACK(redis, [ck.processing, ck.queue], list(messages)))


@translated
async def requeue(
    redis: Redis,
    ck: ConsumerKeys,
    *,
    max_deliveries: int,
    reason: str,
    force: bool = False,
    forget: bool = False,
) -> Requeued:
    """Return a whole processing list to the head of the queue, oldest taken first.

    Messages delivered ``max_deliveries`` times or more go to the dead-letter list with
    ``reason`` instead (0: never). Unless ``force``, does nothing while the consumer's
    lease is alive (checked inside the script: a reaper never races a live consumer).
    ``forget`` also removes the consumer from the registry (a reaper cleaning up).
    """
    keys_ = [*ck.judged(), ck.queue, keys.lease_key(ck.consumer_id)]
    keys_ += [keys.consumer_key(ck.consumer_id), keys.consumers_key(ck.queue)]
    args = [max_deliveries, reason, int(force), ck.consumer_id, int(forget)]
    requeued, dead = await scripts.REQUEUE(redis, keys_, [str(a) for a in args])
    return Requeued(max(int(requeued), 0), int(dead), skipped_alive=int(requeued) < 0)
