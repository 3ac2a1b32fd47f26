"""What an in-process worker holds: taking messages into its slots, settling them, and
handing everything back to the queue at the end of a drain.

The processing list in Redis is the truth about what is held (as for the sidecar,
``consumer.worker``); ``messages`` is this process's view of it, one ``Message`` per busy
slot. A slot names the journal entries of its take and its ack (``redisqueue.Step``), so
a script retried after a lost reply returns what the first run did; the ledger
(``consumer.ledger``) finds what a lost BLMOVE reply left in the list (an orphan).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis

from autoscaler import keys, redisqueue
from autoscaler.consumer.ledger import Ledger
from autoscaler.errors import QueueError
from autoscaler.remote import backoff_delay
from autoscaler.worker.message import How, Message

T = TypeVar("T")

REDIS_ATTEMPTS = 6  # a settle or the final push-back: tries over ~3 s before raising
LOG_EVERY_FAILURES = 20  # a run of Redis failures is logged at its first and every 20th


class Held:
    """The messages yielded and not yet settled, at most ``concurrency``."""

    def __init__(
        self,
        redis: Redis,
        ck: redisqueue.ConsumerKeys,
        log: logging.LoggerAdapter[logging.Logger],
        *,
        concurrency: int,
        max_deliveries: int,
        take_timeout_s: float,
        on_change: Callable[[], None],
    ) -> None:
        self._redis, self._ck, self._log = redis, ck, log
        self._concurrency, self._max_deliveries = concurrency, max_deliveries
        self._take_timeout_s, self._on_change = take_timeout_s, on_change
        self.ledger = Ledger()
        self.messages: dict[int, Message] = {}
        self._free = list(range(concurrency - 1, -1, -1))
        self._lock = asyncio.Lock()  # one take at a time; the final push-back waits for it
        self._failures = 0  # Redis errors in a row

    def __len__(self) -> int:
        return len(self.messages)

    @property
    def full(self) -> bool:
        return len(self.messages) >= self._concurrency

    async def take(self, may_take: Callable[[], bool]) -> Message | None:
        """The next message, waiting up to the take timeout; None if none came, or if
        ``may_take`` turned false meanwhile (a drain began: it goes back uncounted)."""
        async with self._lock:
            if not may_take() or not self._free:
                return None
            slot = self._free.pop()
            delivery = None
            async with self.ledger.door():
                try:
                    step = self.ledger.step(slot)
                    delivery = await redisqueue.take(
                        self._redis, self._ck, self._take_timeout_s, step
                    )
                except QueueError as e:
                    self._redis_failed(e)
                except BaseException:  # a cancelled ``anext``: a take in flight is an orphan
                    self._free.append(slot)  # for the reconciler; the slot stays free
                    self.ledger.dirty = True
                    raise
                else:
                    self._failures = 0
                    self.ledger.took(delivery)
            if delivery is not None and may_take():
                message = Message(self.settle, slot, delivery.message, delivery.count)
                self.messages[slot] = message
                return message
            self._free.append(slot)
            if delivery is not None:
                with contextlib.suppress(QueueError):  # else the drain's push-back does it
                    await redisqueue.push_back(
                        self._redis, self._ck, delivery.message, uncharge=True
                    )
                    self.ledger.left(delivery.message)
                return None
        if self._failures:
            await asyncio.sleep(_backoff_s(self._failures))
        return None

    async def settle(self, message: Message, how: How, reason: str = "") -> bool:
        """ack / nack / release one message; False if it was no longer held."""
        message.mark_settled()
        if message.stale:
            return False
        redis, ck, body = self._redis, self._ck, message.body
        try:
            if how == "ack":
                async with self.ledger.door():
                    step = self.ledger.step(message.slot)
                    held, _ = await self._retried(
                        lambda: redisqueue.ack(redis, ck, body, step=step)
                    )
            elif how == "release":
                held = (
                    await self._retried(
                        lambda: redisqueue.push_back(redis, ck, body, uncharge=True)
                    )
                    > 0
                )
            else:
                held = await self._nack(body, reason)
        except BaseException:
            message.mark_settled(False)  # still held: settle it again, or the exit pushes it back
            raise
        self.ledger.left(body)
        self.messages.pop(message.slot, None)
        self._free.append(message.slot)
        self._on_change()
        return held

    async def push_back_all(self) -> int:
        """Return the whole processing list to the head of the queue (after a drain's
        wait); what is still held goes stale: its late ack returns False."""
        async with self._lock:  # no take in flight while the list goes back
            try:
                result = await self._retried(lambda: redisqueue.requeue(
                    self._redis, self._ck, max_deliveries=0, reason="", force=True))  # fmt: skip
            except QueueError:
                self._log.error("could not push back held messages: they stay in %s for a "
                                "restart or the reaper", self._ck.processing)  # fmt: skip
                return 0
            for message in self.messages.values():
                message.stale = True
            self.messages.clear()
            self._free = list(range(self._concurrency - 1, -1, -1))
            self.ledger.clear()
        self._on_change()
        return result.requeued + result.quarantined

    async def _nack(self, body: bytes, reason: str) -> bool:
        most = self._max_deliveries
        verdict = await self._retried(
            lambda: redisqueue.fail(self._redis, self._ck, body, reason, max_deliveries=most)
        )
        if verdict is redisqueue.Verdict.DEAD:
            self._log.warning("dead-lettered message %s to %s: %s",
                              keys.message_digest(body)[:12], self._ck.dead, reason)  # fmt: skip
        elif verdict is redisqueue.Verdict.RETRY:
            await self._retried(lambda: redisqueue.push_back(self._redis, self._ck, body))
        return verdict is not redisqueue.Verdict.GONE

    async def _retried(self, op: Callable[[], Awaitable[T]]) -> T:
        """A Redis operation, retried (each is idempotent): QueueError after the last try."""
        for attempt in range(1, REDIS_ATTEMPTS + 1):
            try:
                return await op()
            except QueueError as e:
                self._redis_failed(e)
                if attempt == REDIS_ATTEMPTS:
                    raise
                await asyncio.sleep(_backoff_s(attempt))
        raise AssertionError("unreachable")

    def _redis_failed(self, error: QueueError) -> None:
        self.ledger.dirty = True  # a reply may be lost: reconcile the processing list
        self._failures += 1
        if self._failures == 1 or self._failures % LOG_EVERY_FAILURES == 0:
            self._log.warning("redis failed (%d in a row): %s", self._failures, error)


_RNG = random.Random()


def _backoff_s(attempt: int) -> float:
    """Between Redis retries: 0.05 s doubling to 1 s (the same jittered formula as the sidecar)."""
    return backoff_delay(attempt, 0.05, 1.0, _RNG)
