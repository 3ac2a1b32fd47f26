"""What this consumer's slots hold, and the reconciliation that keeps Redis honest.

The processing list is the truth about what a consumer holds; the ledger is the slots'
view of it (a multiset of messages). They differ when a reply was lost: a BLMOVE that
moved a message whose reply never came, or a command that sat in a stalled server's
buffer and ran after its client gave up. Such a message — in the list, held by no slot —
is an *orphan*: nothing would process it while this consumer lives, and no reaper takes a
live consumer's list. ``reconcile`` returns orphans to the head of the queue with their
uncounted delivery taken back.

Every step that can add to the processing list (a take, an ack-and-take) runs inside
``step()``, and records what it took before leaving it; ``reconcile`` closes that door,
waits for the steps inside to finish (their retries included), compares, and reopens.
So a message in transit is never mistaken for an orphan. It runs after any Redis error
(``dirty``) and every ``interval_s`` otherwise, at the cost of one LLEN when the counts
agree.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter

from redis.asyncio import Redis

from autoscaler import redisqueue


class Ledger:
    """The multiset of messages the slots hold, with the door ``reconcile`` closes."""

    def __init__(self) -> None:
        self.held: Counter[bytes] = Counter()
        self.dirty = False  # a Redis error happened since the last reconcile
        self._incarnation = secrets.token_hex(4)
        self._seq = 0
        self._steps = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._open = asyncio.Event()
        self._open.set()

    def __len__(self) -> int:
        return self.held.total()

    def step(self, slot: int) -> redisqueue.Step:
        """A fresh token for one logical ack/take of ``slot`` (kept across its retries)."""
        self._seq += 1
        return redisqueue.Step(str(slot), f"{self._incarnation}-{self._seq}")

    def door(self) -> Ledger:
        """Hold this (``async with``) around a step that may add to the processing list,
        and its record. The ledger is its own context manager: no generator per step."""
        return self

    async def __aenter__(self) -> None:
        if not self._open.is_set():  # a reconcile is running: wait for it
            await self._open.wait()
        self._steps += 1
        self._idle.clear()

    async def __aexit__(self, *exc: object) -> None:
        self._steps -= 1
        if not self._steps:
            self._idle.set()

    def took(self, delivery: redisqueue.Delivery | None) -> None:
        if delivery is not None:
            self.held[delivery.message] += 1

    def left(self, message: bytes) -> None:
        """A held message left our hands (acked, dead-lettered, pushed back, reaped)."""
        if self.held[message] > 1:
            self.held[message] -= 1
        else:
            self.held.pop(message, None)

    def clear(self) -> None:
        """Everything held was pushed back (a drain, a stop)."""
        self.held.clear()

    async def reconcile(self, redis: Redis, keys: redisqueue.ConsumerKeys) -> int:
        """Return the orphans of the processing list to the queue; how many. Raises
        QueueError (then stays ``dirty``)."""
        self._open.clear()
        try:
            await self._idle.wait()
            if not self.dirty and await redisqueue.held_count(redis, keys) == len(self):
                return 0
            orphans = Counter(await redisqueue.held(redis, keys)) - self.held
            returned = await redisqueue.push_back(redis, keys, *orphans.elements(), uncharge=True)
            self.dirty = False
            return returned
        finally:
            self._open.set()
