"""One message's life in the sidecar: deliver, retry, dead-letter, push back, ack.

A message stays in this consumer's processing list until one of those outcomes is
written to Redis, so whatever happens to this process (a crash, a cancel, a hung
processor) the message is still there for a restart or the reaper. Retries happen here,
in place, with exponential backoff and jitter; every retry after an answered failure is a
counted delivery, and the ``fail`` script moves the message to the dead-letter list once
it reached ``max_deliveries``. A processor that is not there (or fails every message) is
not the message's fault: the ``Breaker`` holds the message, uncounted, and probes until
the processor answers. A retry waiting out its backoff (or the breaker) when a drain
begins is pushed back to the queue at once instead: another consumer can take it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import ParamSpec, TypeVar

from redis.asyncio import Redis

from autoscaler import keys, redisqueue
from autoscaler.consumer.breaker import Breaker
from autoscaler.consumer.forward import Answer, Forwarder
from autoscaler.consumer.ledger import Ledger
from autoscaler.consumer.metrics import ConsumerMetrics, Outcome
from autoscaler.consumer.settings import ConsumerSettings
from autoscaler.errors import QueueError
from autoscaler.remote import backoff_delay

P = ParamSpec("P")
T = TypeVar("T")

# Log a run of Redis failures on its first and then every this-many-th attempt.
LOG_EVERY_FAILURES = 20


class MessageHandler:
    """Takes one delivery at a time to its final outcome; shared by all slots."""

    def __init__(
        self,
        redis: Redis,
        forwarder: Forwarder,
        settings: ConsumerSettings,
        metrics: ConsumerMetrics,
        log: logging.LoggerAdapter[logging.Logger],
        *,
        stopping: asyncio.Event,
        rng: random.Random,
        breaker: Breaker,
        ledger: Ledger,
    ) -> None:
        self._breaker = breaker
        self._ledger = ledger
        self._redis = redis
        self._forwarder = forwarder
        self._s = settings
        self._ck = settings.keys
        self._metrics = metrics
        self._log = log
        self._stopping = stopping
        self._rng = rng

    async def process(self, delivery: redisqueue.Delivery) -> bool:
        """Deliver until the processor says 2xx (True: the caller acks) or the message
        left our hands: dead-lettered, pushed back by a drain, or taken by a reaper."""
        started = time.monotonic()
        message, count = delivery.message, delivery.count
        try:
            if len(message) > self._s.max_message_bytes:
                reason = (
                    f"message is {len(message)} bytes, over the limit of "
                    f"{self._s.max_message_bytes} (--max-message-bytes)"
                )
                await self._reject(message, reason)
                return False
            digest = ""  # computed on the first failure only: a SHA-1 per message less

            def suspect() -> str:
                nonlocal digest
                digest = digest or keys.message_digest(message)
                return digest

            answer, _, reason = await self.forward(
                message, count, suspect, lambda n, why: self._retry(message, n, why)
            )
            if answer is None:
                await self.push_back(message)  # a drain while the processor is down
            elif answer is Answer.REJECT:
                await self._reject(message, reason)
            return answer is Answer.OK
        finally:
            self._metrics.processing_s.observe(time.monotonic() - started)

    async def forward(
        self,
        body: bytes,
        count: int,
        suspect: Callable[[], str],
        retry: Callable[[int, str], Awaitable[int]],
        headers: Mapping[str, str] | None = None,
    ) -> tuple[Answer | None, int, str]:
        """POST until the processor gives a final answer, shared by lists and streams.

        An unavailable processor charges nothing (the breaker probes); an answered failure
        is charged through ``retry`` (the next delivery's count, 0 once the message left our
        hands) after the breaker saw ``suspect()`` fail. Returns ``(OK|REJECT, count,
        reason)``, ``(RETRY, 0, reason)`` when the retries ended, or ``(None, count, "")``
        when the breaker refused admission (a drain while the processor is down)."""
        reason = ""
        while count > 0:
            # Closed and not stopping, admit() says yes at once: asked only otherwise (one
            # coroutine a message less, bench_consumer).
            stop = self._stopping
            if (self._breaker.open or stop.is_set()) and not await self._breaker.admit(stop):
                return None, count, ""
            try:
                result = await self._forwarder.post(body, count, headers)
            except BaseException:
                self._breaker.abandon()
                raise
            reason = result.reason
            if result.answer is Answer.UNAVAILABLE:
                self._breaker.unavailable(reason)
                continue
            if result.answer is Answer.RETRY:
                if self._breaker.failed(suspect(), reason):
                    count = await retry(count, reason)
                continue
            self._breaker.answered()
            return result.answer, count, reason
        return Answer.RETRY, 0, reason

    async def ack(
        self, message: bytes, *, take_next: bool, step: redisqueue.Step | None = None
    ) -> redisqueue.Delivery | None:
        """Ack a processed message; with ``take_next``, the next delivery in the same trip.
        ``step`` makes the retries after a lost reply return the first run's answer."""
        held, following = await self.redis_op(
            redisqueue.ack, self._redis, self._ck, message, take_next=take_next,
            step=step or redisqueue.Step(),
        )  # fmt: skip
        self._metrics.count(Outcome.ACKED)
        if not held:
            self._log.warning(
                "acked message %s was no longer held (returned to the queue by a reaper or "
                "a restart of this consumer); it will be delivered again",
                _short(message),
            )
        return following

    async def _reject(self, message: bytes, reason: str) -> None:
        moved = await self.redis_op(
            lambda: redisqueue.dead_letter(self._redis, self._ck, message, reason)
        )
        if moved:
            self._metrics.count(Outcome.DEAD_LETTERED)
            self._log.warning(
                "dead-lettered message %s to %s: %s", _short(message), self._ck.dead, reason
            )

    async def _retry(self, message: bytes, count: int, reason: str) -> int:
        """After a failed delivery: the next delivery's count, or 0 when it left our hands."""
        verdict = await self.redis_op(
            lambda: redisqueue.fail(
                self._redis, self._ck, message, reason, max_deliveries=self._s.max_deliveries
            )
        )
        if verdict is redisqueue.Verdict.DEAD:
            self._metrics.count(Outcome.DEAD_LETTERED)
            self._log.warning(
                "dead-lettered message %s to %s after %d deliveries: %s",
                _short(message), self._ck.dead, count, reason,
            )  # fmt: skip
            return 0
        if verdict is redisqueue.Verdict.GONE:
            self._log.warning("message %s was taken back by a reaper meanwhile", _short(message))
            return 0
        self._metrics.count(Outcome.RETRIED)
        delay_s = self.backoff_s(count)
        self._log.info(
            "delivery %d of message %s failed (%s); retrying in %.2fs",
            count, _short(message), reason, delay_s,
        )  # fmt: skip
        if await self.pause(delay_s):
            await self.push_back(message)
            return 0
        return await self.redis_op(lambda: redisqueue.redeliver(self._redis, self._ck, message))

    async def push_back(self, message: bytes) -> None:
        """Return a held message to the head of the queue, untouched (a drain began)."""
        if await self.redis_op(lambda: redisqueue.push_back(self._redis, self._ck, message)):
            self._metrics.count(Outcome.PUSHED_BACK)

    def backoff_s(self, attempt: int) -> float:
        """Exponential in ``attempt`` (1-based) up to the cap; the upper half is jitter."""
        return backoff_delay(attempt, self._s.backoff_base_s, self._s.backoff_max_s, self._rng)

    async def pause(self, seconds: float) -> bool:
        """Sleep, cut short by a drain or a stop; True when it was cut short."""
        if self._stopping.is_set():
            return True
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            return False
        return True

    async def redis_op(self, op: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a Redis operation (``op(*args, **kwargs)``) until it succeeds: the message
        must not be forgotten.

        Only a cancel (cold stop) ends the loop early; the message then stays in the
        processing list, where the final push-back, a restart or the reaper finds it.
        """
        failures = 0
        while True:
            try:
                return await op(*args, **kwargs)
            except QueueError as e:
                failures += 1
                self.redis_failed(e, failures)
                await asyncio.sleep(self.backoff_s(failures))

    def redis_failed(self, error: QueueError, failures: int) -> None:
        self._ledger.dirty = True  # a reply may be lost: reconcile the processing list
        self._metrics.redis_errors.inc()
        if failures == 1 or failures % LOG_EVERY_FAILURES == 0:
            self._log.warning("redis failed (%d in a row), retrying: %s", failures, error)


def _short(message: bytes) -> str:
    """A message's name in logs: the start of its digest, never its content."""
    return keys.message_digest(message)[:12]
