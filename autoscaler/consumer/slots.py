"""The slots: ``--concurrency`` tasks, each taking a message and processing it, in a loop.

Each ack also takes the slot's next message, in one script (``ack(take_next=True)``): one
Redis round trip per message. A single slot in front of a fast processor also *takes
ahead*: while message *i* is POSTed, that script acks *i−1* and takes *i+1*, so a message
costs about max(HTTP, Redis) instead of their sum; the slot then holds up to three
messages in the processing list (in flight, ack in transit, taken ahead), all safe there:
a stop pushes the processing list back whole. Only then, because with several slots the
others keep the processor busy during this one's Redis trip (taking ahead measured slower
at 8 and 32 slots: a task per message for nothing), and with a slow processor a message
taken ahead would wait a whole processing time that another consumer could have used.
Never under a rate limit (every take waits for the throttler) nor while draining.

A slot leaves its loop once ``stopping`` is set, after landing its last ack, and leaves
any message it took ahead in the processing list for the drain's push-back. While the
breaker is open (the processor is down) a slot takes nothing new.

Every take and ack-and-take runs inside the ledger's door with a token of its own
(``Ledger.step``): retried after a lost reply it returns what the first run took, and
``Ledger.reconcile`` never mistakes a message in transit for an orphan.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from asyncio_throttle.throttler import Throttler
from redis.asyncio import Redis

from autoscaler import redisqueue
from autoscaler.consumer.breaker import Breaker
from autoscaler.consumer.handler import MessageHandler
from autoscaler.consumer.ledger import Ledger
from autoscaler.consumer.metrics import ConsumerMetrics
from autoscaler.consumer.settings import ConsumerSettings
from autoscaler.errors import QueueError

Ahead = asyncio.Task[redisqueue.Delivery | None]

# A single slot takes ahead while its processor answered within this (seconds).
TAKE_AHEAD_BELOW_S = 0.005


class Slots:
    """Starts, counts and cancels the slot tasks of one consumer."""

    def __init__(
        self,
        redis: Redis,
        settings: ConsumerSettings,
        handler: MessageHandler,
        metrics: ConsumerMetrics,
        log: logging.LoggerAdapter[logging.Logger],
        *,
        stopping: asyncio.Event,
        throttler: Throttler | None,
        on_exit: Callable[[asyncio.Task[None]], None],
        breaker: Breaker,
        ledger: Ledger,
    ) -> None:
        self._breaker = breaker
        self._ledger = ledger
        self._redis = redis
        self._s = settings
        self._ck = settings.keys  # one object: its ACK_TAKE keys are built once
        self._handler = handler
        self._metrics = metrics
        self._log = log
        self._stopping = stopping
        self._throttler = throttler
        self._on_exit = on_exit
        self._tasks: set[asyncio.Task[None]] = set()
        self.in_flight = 0  # messages being processed now (not those taken ahead)
        # Read at scrape time: two locked gauge sets per message less (bench_consumer).
        metrics.in_flight.set_function(lambda: self.in_flight)
        self._take_failures = 0  # Redis errors in a row, across slots, for the backoff

    def __bool__(self) -> bool:
        return bool(self._tasks)

    def start(self) -> None:
        for index in range(self._s.concurrency):
            task = asyncio.create_task(self._run(index), name=f"consumer-slot-{index}")
            self._tasks.add(task)
            task.add_done_callback(self._done)

    async def cancel(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._on_exit(task)

    async def _run(self, slot: int) -> None:
        current: redisqueue.Delivery | None = None
        ahead: Ahead | None = None
        took_s = float("inf")  # how long the processor took last time
        try:
            while not self._stopping.is_set():
                if current is None:
                    await self._breaker.closed(self._stopping)
                    if not self._stopping.is_set():
                        current = await self._take(slot)
                    continue
                if ahead is None and self._may_take_ahead(took_s):
                    take = self._take_now(slot)
                    ahead = asyncio.create_task(take, name="consumer-take-ahead")
                started = time.monotonic()
                self.in_flight += 1
                try:
                    ok = await self._handler.process(current)
                finally:
                    self.in_flight -= 1
                took_s = time.monotonic() - started
                following = await ahead if ahead is not None else None
                ahead = None
                if not ok:  # dead-lettered, pushed back or reaped: not ours any more
                    self._ledger.left(current.message)
                elif following is None:  # nothing in hand: ack and take in one trip
                    following = await self._ack(slot, current.message, self._may_take())
                else:  # ack (and take ahead) while the next one is processed
                    ack = self._ack(slot, current.message, self._may_take_ahead(took_s))
                    ahead = asyncio.create_task(ack, name="consumer-ack")
                current = following
        except asyncio.CancelledError:
            if ahead is not None:
                ahead.cancel()
                await asyncio.gather(ahead, return_exceptions=True)
            raise
        if ahead is not None:
            await ahead  # land the last ack before the drain pushes the list back

    def _may_take(self) -> bool:
        return self._throttler is None and not self._stopping.is_set() and not self._breaker.open

    def _may_take_ahead(self, took_s: float) -> bool:
        return self._s.concurrency == 1 and took_s < TAKE_AHEAD_BELOW_S and self._may_take()

    async def _ack(self, slot: int, message: bytes, take_next: bool) -> redisqueue.Delivery | None:
        async with self._ledger.door():
            step = self._ledger.step(slot)
            following = await self._handler.ack(message, take_next=take_next, step=step)
            self._ledger.left(message)
            self._ledger.took(following)
        return following

    async def _take_now(self, slot: int) -> redisqueue.Delivery | None:
        async with self._ledger.door():
            try:
                delivery = await redisqueue.take_now(self._redis, self._ck, self._ledger.step(slot))
            except QueueError as e:
                self._handler.redis_failed(e, 1)  # a lost reply may have taken one
                return None  # the blocking take that follows reports and backs off
            self._ledger.took(delivery)
        return delivery

    async def _take(self, slot: int) -> redisqueue.Delivery | None:
        """Wait up to the take timeout for a message; back off after a Redis error."""
        if self._throttler is not None:
            await self._throttler.acquire()  # type: ignore[no-untyped-call]
        async with self._ledger.door():
            step = self._ledger.step(slot)
            try:
                delivery = await redisqueue.take(
                    self._redis, self._ck, self._s.take_timeout_s, step
                )
            except QueueError as e:
                self._take_failures += 1
                self._handler.redis_failed(e, self._take_failures)
                delivery = None
            else:
                self._take_failures = 0
                self._ledger.took(delivery)
        if delivery is None and self._take_failures:
            await self._handler.pause(self._handler.backoff_s(self._take_failures))
        return delivery
