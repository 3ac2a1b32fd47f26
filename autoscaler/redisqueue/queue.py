"""Reliable-queue operations on one consumer's keys: take, ack, fail, push back, requeue.

Used by the sidecar for every message and by the controller's reaper for dead consumers.

Retries assume the request may have run. A reply lost to a Redis stall or restart is
retried by redis-py's ``Retry`` and by the sidecar; every script here is safe to run again:
``ack``/``take_now`` carry a *token* (one per logical step of a slot, the same for each
retry) that the journal remembers with the reply, so a second run returns what the first
took instead of taking another; ``fail``, ``push_back`` and ``requeue`` find nothing left
to do. Two steps cannot be made so: a BLMOVE whose reply is lost leaves a message in the
processing list that no slot holds, and a command that sat in a stalled server's buffer
may run after its client gave up. The sidecar's ledger (``consumer.ledger``) reconciles
the processing list with what its slots hold and returns such *orphans* to the queue.
"""

from __future__ import annotations

import asyncio
import functools
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

    @property
    def quarantine(self) -> str:
        return keys.quarantine_key(self.queue)

    @property
    def alone(self) -> str:
        return keys.alone_key(self.queue, self.consumer_id)

    @property
    def journal(self) -> str:
        return keys.journal_key(self.queue, self.consumer_id)

    def judged(self) -> list[str]:
        """KEYS of the scripts that may dead-letter: processing, dead, reasons, deliveries,
        alone, meta."""
        dead = self.dead
        deliveries = keys.deliveries_key(self.queue)
        return [self.processing, dead, keys.dead_reasons_for(dead), deliveries, self.alone,
                keys.dead_meta_for(dead)]  # fmt: skip

    def taking(self) -> tuple[str, ...]:
        """KEYS of ``ACK_TAKE``."""
        return self._taking

    @functools.cached_property
    def _taking(self) -> tuple[str, ...]:
        # Built once: the sidecar runs ACK_TAKE once per message, and building the seven
        # names each time cost ~5 µs of CPU per message (bench_consumer, cProfile).
        return (self.queue, self.processing, keys.deliveries_key(self.queue), self.quarantine,
                self.alone, self.journal, keys.processed_key(self.queue))  # fmt: skip


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
    quarantined: int = 0  # held at a crash beside others: to be delivered again alone


@dataclass(frozen=True, slots=True)
class Step:
    """Identifies one logical ack/take of a slot, the same for every retry of it."""

    slot: str = ""
    token: str = ""  # "": no journal (the step is not retried, or a test)


# While a suspect waits for this consumer, a blocking take polls at this interval (seconds)
# instead of blocking in BLMOVE, which would take a neighbour for it.
WAIT_POLL_S = 0.05


async def _ack_take(
    redis: Redis, ck: ConsumerKeys, step: Step, message: bytes | None, take_next: bool
) -> tuple[bool, str, Delivery | None]:
    args = [step.token, step.slot, "0" if message is None else "1", message or b"",
            "1" if take_next else "0"]  # fmt: skip
    reply = await scripts.ACK_TAKE(redis, ck.taking(), args)
    took = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
    following = Delivery(reply[2], int(reply[3])) if len(reply) == 5 else None
    return bool(reply[0]), took, following


@translated
async def take_now(redis: Redis, ck: ConsumerKeys, step: Step = Step()) -> Delivery | None:
    """Move the next message to the processing list and count it; None if there is none
    (or a suspect in the quarantine waits for this consumer to hold nothing else)."""
    return (await _ack_take(redis, ck, step, None, True))[2]


@translated
async def take(
    redis: Redis, ck: ConsumerKeys, timeout_s: float, step: Step = Step()
) -> Delivery | None:
    """Like ``take_now``, but waits up to ``timeout_s`` (> 0) for a message to arrive.

    Tries the non-blocking script first (one round trip that also counts the delivery);
    only an empty queue pays for BLMOVE plus a separate count.
    """
    _, took, found = await _ack_take(redis, ck, step, None, True)
    if found is not None:
        return found
    if took == "wait":
        await asyncio.sleep(min(timeout_s, WAIT_POLL_S))
        return None
    # BLMOVE takes a float timeout since Redis 6; redis-py's stub says int.
    message = await redis.blmove(ck.queue, ck.processing, timeout_s, "RIGHT", "LEFT")  # type: ignore[arg-type]
    if not isinstance(message, bytes):
        return None
    taken_keys = [ck.processing, keys.deliveries_key(ck.queue), ck.quarantine, ck.alone, ck.queue]
    count = int(await scripts.TAKEN(redis, taken_keys, [message]))
    return Delivery(message, count) if count else None


@translated
async def ack(
    redis: Redis,
    ck: ConsumerKeys,
    message: bytes,
    *,
    take_next: bool = False,
    step: Step = Step(),
) -> tuple[bool, Delivery | None]:
    """Remove a processed message and count it; with ``take_next`` also take the next one.

    Returns (was still held, next delivery). Not held means a reaper already returned it
    to the queue: it will be processed again (at-least-once), and is not counted now.
    With a ``step`` token a retry returns the first run's answer.
    """
    held, _, following = await _ack_take(redis, ck, step, message, take_next)
    return held, following


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
async def push_back(
    redis: Redis, ck: ConsumerKeys, *messages: bytes, uncharge: bool = False
) -> int:
    """Return held messages to the head of the queue (a suspect to the quarantine); how
    many were still held. ``uncharge``: they were never delivered (orphans), so take back
    the delivery counted when they were taken."""
    if not messages:
        return 0
    keys_ = [ck.processing, ck.queue, ck.alone, ck.quarantine, keys.deliveries_key(ck.queue)]
    return int(await scripts.PUSH_BACK(redis, keys_, ["1" if uncharge else "0", *messages]))


@translated
async def held(redis: Redis, ck: ConsumerKeys) -> list[bytes]:
    """The processing list, newest taken first."""
    return [m for m in await redis.lrange(ck.processing, 0, -1) if isinstance(m, bytes)]


@translated
async def held_count(redis: Redis, ck: ConsumerKeys) -> int:
    return int(await redis.llen(ck.processing))


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
    """Return a whole processing list to the queue, oldest taken first.

    ``max_deliveries`` 0 (a drain): everything back to the head of the queue, unjudged.
    Otherwise the consumer crashed (or stalled past its lease), and the poison rule
    applies: one message held alone is the suspect, dead-lettered with ``reason`` once it
    was delivered ``max_deliveries`` times, else quarantined; several held together are
    all quarantined with their last delivery taken back, never dead-lettered (see
    ``keys``: quarantine). Unless ``force``, does nothing while the consumer's lease is
    alive (checked inside the script: a reaper never races a live consumer). ``forget``
    also removes the consumer from the registry (a reaper cleaning up).
    """
    keys_ = [*ck.judged(), ck.queue, keys.lease_key(ck.consumer_id, ck.queue)]
    keys_ += [keys.consumer_key(ck.consumer_id, ck.queue), keys.consumers_key(ck.queue)]
    keys_ += [ck.quarantine, ck.journal]
    args = [max_deliveries, reason, int(force), ck.consumer_id, int(forget)]
    requeued, dead, quarantined = await scripts.REQUEUE(redis, keys_, [str(a) for a in args])
    return Requeued(
        max(int(requeued), 0), int(dead), int(requeued) < 0, quarantined=int(quarantined)
    )
