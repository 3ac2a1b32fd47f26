"""The sidecar consumer: N slots taking messages, and the drain and stop that end them.

Terms:

slot
    One task that takes a message (``BLMOVE`` into this consumer's processing list),
    hands it to the ``MessageHandler``, acks it and takes the next (``slots``).
drain
    Stop taking (one flag, arq's ``allow_pick_jobs``), let held messages finish within
    ``drain_timeout_s``, cancel what is left, push everything still in the processing
    list back to the head of the queue, report ``drained``. Asked by the controller
    (``command=drain``; ``command=run`` resumes) or by the first SIGTERM (then exit).
cold stop
    A second SIGTERM: cancel the slots now, still push back, exit.

The processing list, not this process's memory, is the truth about what is held: after
the slots are stopped, the whole list goes back in one atomic script, so a message
moved by a take whose reply never arrived is pushed back too. While running, the ledger
reconciles the list with what the slots hold after any Redis error and every
``reconcile_interval_s`` (``ledger``). On start, the same list is requeued first: a
previous incarnation with this id may have crashed holding some (the poison rule of
``redisqueue.requeue`` applies).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Callable

import aiohttp
from asyncio_throttle.throttler import Throttler
from redis.asyncio import Redis

from autoscaler import redisqueue
from autoscaler.consumer.breaker import Breaker
from autoscaler.consumer.forward import Forwarder
from autoscaler.consumer.handler import MessageHandler
from autoscaler.consumer.heartbeat import Heartbeat
from autoscaler.consumer.ledger import Ledger
from autoscaler.consumer.logs import ConsumerLog
from autoscaler.consumer.metrics import ConsumerMetrics, Outcome
from autoscaler.consumer.settings import ConsumerSettings
from autoscaler.consumer.slots import Slots
from autoscaler.errors import QueueError
from autoscaler.keys import Command, ConsumerState

logger = logging.getLogger(__name__)

# Attempts at the final push-back before giving up to the reaper (Redis is down).
PUSH_BACK_ATTEMPTS = 5


def make_throttler(rate_per_s: float | None) -> Throttler | None:
    """asyncio-throttle counts whole tasks per period: 2.5/s is 2 per 0.8 s, 0.5/s 1 per 2 s."""
    if rate_per_s is None:
        return None
    limit = max(1, int(rate_per_s))
    return Throttler(rate_limit=limit, period=limit / rate_per_s)


class Worker:
    """One consumer process's work; ``run`` returns after a stop, with everything returned."""

    def __init__(
        self,
        redis: Redis,
        session: aiohttp.ClientSession,
        settings: ConsumerSettings,
        metrics: ConsumerMetrics,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._redis = redis
        self._s = settings
        self._metrics = metrics
        self._log = ConsumerLog(logger, settings.queue, settings.consumer_id)
        self._stopping = asyncio.Event()  # set: take nothing more (drain or stop)
        self._wake = asyncio.Event()  # a request arrived or a slot ended
        self._cold = False
        self._stops = 0
        self._drain_requested = False
        self.state = ConsumerState.RUNNING
        self.failed = False  # a slot crashed or the final push-back failed: exit 1
        forwarder = Forwarder(session, settings.forward_url, settings.queue,
                              settings.consumer_id, settings.request_timeout_s)  # fmt: skip
        rng = rng or random.Random()
        self.breaker = Breaker(
            threshold=settings.breaker_threshold, backoff_s=settings.backoff_base_s,
            max_backoff_s=settings.backoff_max_s, metrics=metrics, log=self._log, rng=rng,
        )  # fmt: skip
        self._ledger = Ledger()
        self._handler, self._slots = self._backend(forwarder, rng)
        registration = redisqueue.Registration(
            settings.keys, settings.pod_name, secrets.token_hex(8),
            settings.max_deliveries, round(time.time(), 3),
        )  # fmt: skip
        self._heartbeat = Heartbeat(
            redis, registration, settings.heartbeat_interval_s, settings.lease_ms,
            status=lambda: (self.state, len(self._ledger)), on_command=self._on_command,
            log=self._log,
        )  # fmt: skip

    def _backend(self, forwarder: Forwarder, rng: random.Random) -> tuple[MessageHandler, Slots]:
        """The queue backend's handler and slots: a Redis list's here; a subclass swaps in
        another (``consumer.stream``) and keeps the lifecycle, drain and heartbeat."""
        handler = MessageHandler(self._redis, forwarder, self._s, self._metrics, self._log,
                                 stopping=self._stopping, rng=rng, breaker=self.breaker,
                                 ledger=self._ledger)  # fmt: skip
        slots = Slots(
            self._redis, self._s, handler, self._metrics, self._log, stopping=self._stopping,
            throttler=make_throttler(self._s.rate_per_s), on_exit=self._task_done,
            breaker=self.breaker, ledger=self._ledger,
        )  # fmt: skip
        return handler, slots

    @property
    def in_flight(self) -> int:
        return self._slots.in_flight

    @property
    def ready(self) -> bool:
        """For the pod's readiness probe: taking messages, with a processor that answers."""
        return self.state is ConsumerState.RUNNING and not self.breaker.open

    def request_drain(self) -> None:
        self._drain_requested = True
        self._wake.set()

    def request_run(self) -> None:
        self._drain_requested = False
        self._wake.set()

    def request_stop(self) -> None:
        """First call: drain, then return from ``run``. Second: cold stop."""
        self._stops += 1
        if self._stops >= 2 and not self._cold:
            self._cold = True
            self._log.warning("second stop request: cold stop, pushing back what is held")
        self._wake.set()

    async def run(self) -> None:
        """Register, return what a previous incarnation held, consume until stopped.

        Raises QueueError when Redis cannot be reached at start.
        """
        await self._heartbeat.beat()
        await self._recover()
        await self._check_durability()
        self._log.info(
            "consuming: forward=%s concurrency=%d rate=%s",
            self._s.forward_url, self._s.concurrency, self._s.rate_per_s or "unlimited",
        )  # fmt: skip
        beat = asyncio.create_task(self._heartbeat.run(), name="consumer-heartbeat")
        beat.add_done_callback(self._task_done)  # without heartbeats the lease would expire
        reconciler = asyncio.create_task(self._reconcile_forever(), name="consumer-reconcile")
        reconciler.add_done_callback(self._task_done)
        try:
            await self._lifecycle()
        finally:
            await self._slots.cancel()
            for task in (beat, reconciler):
                task.cancel()
            await asyncio.gather(beat, reconciler, return_exceptions=True)
        await self._farewell()

    async def _check_durability(self) -> None:
        """Warn (log, metric) when this Redis can lose messages; never fatal."""
        try:
            durability = await redisqueue.read_durability(self._redis)
        except QueueError as e:
            self._log.warning("could not read the Redis persistence settings: %s", e)
            return
        self._metrics.risks(durability.risks())
        for warning in durability.warnings():
            self._log.warning("this Redis can lose messages: %s", warning)

    async def _reconcile_forever(self) -> None:
        """Return orphans of the processing list to the queue: after a Redis error (checked
        every heartbeat interval) and every ``reconcile_interval_s``."""
        next_at = time.monotonic() + self._s.reconcile_interval_s
        while True:
            await asyncio.sleep(self._s.heartbeat_interval_s)
            if not self._ledger.dirty and time.monotonic() < next_at:
                continue
            next_at = time.monotonic() + self._s.reconcile_interval_s
            try:
                returned = await self._ledger.reconcile(self._redis, self._s.keys)
            except QueueError:
                continue  # still dirty: the next round tries again
            if returned:
                self._metrics.orphans.inc(returned)
                self._log.warning(
                    "returned %d messages to the queue that were in the processing list but "
                    "held by no slot (a reply lost to a Redis fault)", returned,
                )  # fmt: skip

    async def _recover(self) -> None:
        result = await redisqueue.requeue(
            self._redis, self._s.keys, max_deliveries=self._s.max_deliveries,
            reason=f"delivered {self._s.max_deliveries} times; its consumer restarted",
            force=True,
        )  # fmt: skip
        if result.requeued or result.dead_lettered or result.quarantined:
            self._log.warning(
                "returned %d messages a previous incarnation held to the queue "
                "(%d quarantined, %d dead-lettered after max deliveries)",
                result.requeued + result.quarantined, result.quarantined, result.dead_lettered,
            )  # fmt: skip

    async def _lifecycle(self) -> None:
        """Run ↔ drained on commands, until a stop; each stop path ends drained."""
        while True:
            if not self._drain_requested and not self._stops:
                self._set_state(ConsumerState.RUNNING)
                self._stopping.clear()
                self._slots.start()
                await self._until(lambda: self._drain_requested or self._stops > 0)
            await self._drain()
            await self._until(lambda: not self._drain_requested or self._stops > 0)
            if self._stops:
                return

    async def _until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self._wake.wait()
            self._wake.clear()

    async def _drain(self) -> None:
        self._set_state(ConsumerState.DRAINING)
        self._stopping.set()
        started = time.monotonic()
        await self._finish_slots(started + self._s.drain_timeout_s)
        held = self._slots.in_flight
        await self._slots.cancel()
        pushed = await self._push_back_all()
        self._ledger.clear()
        self._set_state(ConsumerState.DRAINED)
        self._log.info(
            "drained in %.1fs: %d messages interrupted, %d pushed back to the queue",
            time.monotonic() - started, held, pushed,
        )  # fmt: skip

    async def _finish_slots(self, deadline: float) -> None:
        """Wait for the slots to end by themselves, until the deadline or a cold stop."""
        while self._slots and not self._cold:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._log.warning(
                    "drain timeout (%ss): interrupting %d messages", self._s.drain_timeout_s,
                    self._slots.in_flight,
                )  # fmt: skip
                return
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._wake.wait()

    async def _push_back_all(self) -> int:
        """Return the whole processing list to the queue head; it holds only unfinished work."""
        for attempt in range(1, PUSH_BACK_ATTEMPTS + 1):
            try:
                result = await redisqueue.requeue(
                    self._redis, self._s.keys, max_deliveries=0, reason="", force=True
                )
            except QueueError as e:
                self._handler.redis_failed(e, attempt)
                await asyncio.sleep(self._handler.backoff_s(attempt))
                continue
            pushed = result.requeued + result.quarantined
            self._metrics.count(Outcome.PUSHED_BACK, pushed)
            return pushed
        self.failed = True
        self._log.error(
            "could not push back held messages: they stay in %s for a restart or the reaper",
            self._s.keys.processing,
        )
        return 0

    def _task_done(self, task: asyncio.Task[None]) -> None:
        """A slot or the heartbeat ended: wake the lifecycle; a crash stops the consumer."""
        self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            self._log.error("%s crashed; stopping", task.get_name(), exc_info=task.exception())
            self.failed = True
            self.request_stop()

    def _on_command(self, command: Command) -> None:
        if command is Command.DRAIN and not self._drain_requested:
            self._log.info("drain requested by the controller")
            self.request_drain()
        elif command is Command.RUN and self._drain_requested:
            self._log.info("drain cancelled by the controller: taking messages again")
            self.request_run()

    def _set_state(self, state: ConsumerState) -> None:
        if state is not self.state:
            self._log.info("state %s", state.value)
        self.state = state
        self._metrics.state(state)
        self._heartbeat.poke()

    async def _farewell(self) -> None:
        """Publish the final state and drop the lease; a failure here loses nothing."""
        try:
            await self._heartbeat.beat()
            await self._heartbeat.release()
        except QueueError as e:
            self._log.warning("could not publish the final state: %s", e)
        self._log.info("stopped")
