"""The circuit breaker in front of the processor: an outage is not a bad message.

States: *closed* (deliver freely), *open* (the processor is down: take nothing new, no
delivery counted), with a *half-open* probe: while open, one delivery at a time is let
through after a backoff (``--retry-backoff``, doubling per failed probe up to
``--retry-max-backoff``, the upper half jitter); its answer closes the breaker or keeps
it open. What opens it:

unavailable
    Connection refused or reset before any response, a connect timeout, HTTP 502 or 503:
    the processor (or the proxy in front of it) is not there. Never counted as a
    delivery; the same message is retried.
failing
    Answered failures (other 5xx, 408, 429, a timeout after the request was sent) of
    ``threshold`` *different* messages in a row, without a success between: the
    processor fails everything, so from then on its failures are not counted either. One
    message failing alone is counted (it may be the message) and dead-lettered at
    ``--max-deliveries``.

Any answer that is not a failure (2xx, or a 4xx verdict on the message) closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable

from autoscaler.consumer.metrics import ConsumerMetrics


class Breaker:
    """Shared by all slots of one consumer."""

    def __init__(
        self,
        *,
        threshold: int,
        backoff_s: float,
        max_backoff_s: float,
        metrics: ConsumerMetrics,
        log: logging.LoggerAdapter[logging.Logger],
        rng: random.Random,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = threshold
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._metrics = metrics
        self._log = log
        self._rng = rng
        self._clock = clock
        self.open = False
        self._probes_failed = 0
        self._next_probe_at = 0.0
        self._probing = False
        self._streak: set[str] = set()  # digests of messages failing in a row
        self._changed = asyncio.Event()
        metrics.processor_up.set(1)

    async def admit(self, stopping: asyncio.Event) -> bool:
        """Wait for leave to deliver: at once when closed, else this slot's turn to probe.
        False when ``stopping`` was set first (a drain or a stop)."""
        while self.open:
            if stopping.is_set():
                return False
            wait_s = self._next_probe_at - self._clock()
            if not self._probing and wait_s <= 0:
                self._probing = True
                return True
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s if not self._probing and wait_s > 0 else None):
                    await _first(self._changed, stopping)
        return not stopping.is_set()

    async def closed(self, stopping: asyncio.Event) -> None:
        """Wait until the breaker is closed (or ``stopping``): slots take nothing new."""
        while self.open and not stopping.is_set():
            self._changed.clear()
            await _first(self._changed, stopping)

    def unavailable(self, reason: str) -> None:
        """The processor is not there. Never a charge."""
        self._metrics.processor_unavailable.inc()
        self._trip(f"processor unavailable: {reason}")

    def failed(self, digest: str, reason: str) -> bool:
        """An answered failure; True when it is to be counted as a delivery."""
        if self.open:
            self._trip(reason)  # a failed probe: wait longer
            self._metrics.processor_unavailable.inc()
            return False
        self._streak.add(digest)
        if len(self._streak) >= self._threshold:
            self._trip(f"{len(self._streak)} different messages failed in a row: {reason}")
            return False
        return True

    def answered(self) -> None:
        """A success or a verdict on the message: the processor is there."""
        self._streak.clear()
        self._probing = False
        if self.open:
            self.open = False
            self._probes_failed = 0
            self._metrics.processor_up.set(1)
            self._log.info("processor answers again: taking messages")
            self._changed.set()

    def abandon(self) -> None:
        """A delivery was cancelled before its answer: let another slot probe."""
        if self._probing:
            self._probing = False
            self._changed.set()

    def _trip(self, reason: str) -> None:
        self._probing = False
        if not self.open:
            self.open = True
            self._metrics.processor_up.set(0)
            self._log.warning("%s; holding messages and probing until it answers", reason)
        else:
            self._probes_failed += 1
        ceiling = min(self._max_backoff_s, self._backoff_s * (1 << min(self._probes_failed, 30)))
        self._next_probe_at = self._clock() + ceiling / 2 + self._rng.uniform(0, ceiling / 2)
        self._changed.set()


async def _first(*events: asyncio.Event) -> None:
    """Return when any of ``events`` is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
