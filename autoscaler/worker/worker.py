"""``Worker``: take messages in-process, with the sidecar's registry, drain and reaper protocol.

Terms are the sidecar's (``autoscaler.consumer``, ``autoscaler.keys``): each message is
taken with the same idempotent script into this worker's processing list (journal tokens
per slot, the quarantine rule), and leaves it only when settled (``message``). The
heartbeat (``consumer.heartbeat``) renews the lease and publishes state and in-flight;
the controller's ``drain`` stops the iterator from yielding, the messages already
yielded get ``drain_timeout_s`` to be settled, then whatever the processing list still
holds goes back to the head of the queue and the worker reports ``drained``. ``run``
from the controller resumes. The first SIGTERM (or ``stop()``) drains and then ends the
iteration; a second one, or leaving the ``async with`` block, is a cold stop: no wait.
A crash (SIGKILL, OOM) leaves the lease to expire and the controller's reaper returns
the processing list to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Callable
from types import TracebackType

from redis.asyncio import Redis

from autoscaler import keys, redisqueue
from autoscaler.consumer.heartbeat import Heartbeat
from autoscaler.consumer.logs import ConsumerLog
from autoscaler.errors import QueueError
from autoscaler.keys import Command, ConsumerState
from autoscaler.redisconn import make_client
from autoscaler.worker.held import Held
from autoscaler.worker.message import Message

logger = logging.getLogger(__name__)

RECONCILE_INTERVAL_S = 10.0  # as the sidecar's --reconcile-interval default
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Worker:
    """``async with Worker(url, queue) as w: async for message in w: … await message.ack()``.

    ``concurrency``: messages yielded and not yet settled, at most; the iterator waits
    for a free slot (process them in tasks to use more than one). ``consumer_id``
    defaults to ``$POD_NAME`` (the controller finds the pod's consumers by it), else the
    hostname plus a random suffix. Other settings mean what the sidecar's flags mean
    (``autoscaler consume --help``); durations are seconds. ``redis``: a client to use
    instead of one from ``redis_url`` (not closed here); it must not decode responses.
    """

    def __init__(
        self,
        redis_url: str,
        queue: str,
        *,
        consumer_id: str | None = None,
        concurrency: int = 1,
        max_deliveries: int = 5,
        dead_letter: str = "",
        drain_timeout_s: float = 120.0,
        heartbeat_interval_s: float = 1.0,
        handle_signals: bool = True,
        redis: Redis | None = None,
    ) -> None:
        pod = os.environ.get("POD_NAME", "")
        cid = consumer_id or pod or f"{socket.gethostname()}-{secrets.token_hex(3)}"
        _check(bool(queue), "queue: must not be empty")
        _check(keys.valid_consumer_id(cid), f"consumer_id: {cid[:80]!r} is not a valid id "
               f"({keys.CONSUMER_ID_RE.pattern})")  # fmt: skip
        _check(concurrency >= 1, f"concurrency: {concurrency} must be at least 1")
        _check(max_deliveries >= 1, f"max_deliveries: {max_deliveries} must be at least 1")
        _check(drain_timeout_s >= 0, f"drain_timeout_s: {drain_timeout_s} must be ≥ 0")
        _check(heartbeat_interval_s >= 0.05,
               f"heartbeat_interval_s: {heartbeat_interval_s} must be ≥ 0.05")  # fmt: skip
        self.consumer_id, self.queue, self.concurrency = cid, queue, concurrency
        self._own_client = redis is None
        self._redis = redis or make_client(redis_url, connect_timeout_s=5.0, read_timeout_s=None,
                                           max_connections=2 * concurrency + 4)  # fmt: skip
        self._keys = redisqueue.ConsumerKeys(queue, cid, dead_letter)
        self._max_deliveries, self._drain_timeout_s = max_deliveries, drain_timeout_s
        self._interval_s, self._handle_signals = heartbeat_interval_s, handle_signals
        self._log = ConsumerLog(logger, queue, cid)
        self._changed = asyncio.Event()
        take_timeout_s = min(1.0, heartbeat_interval_s)  # how soon an idle take sees a drain
        self._held = Held(self._redis, self._keys, self._log, concurrency=concurrency,
                          max_deliveries=max_deliveries, take_timeout_s=take_timeout_s,
                          on_change=self._notify)  # fmt: skip
        self._drain_requested, self._stops, self._ended = False, 0, False
        self._tasks: list[asyncio.Task[None]] = []
        self.state = ConsumerState.RUNNING
        registration = redisqueue.Registration(self._keys, pod or cid, secrets.token_hex(8),
                                       max_deliveries, round(time.time(), 3))  # fmt: skip
        lease_ms = round(heartbeat_interval_s * 3000)  # the lease lives 3 heartbeats
        self._heartbeat = Heartbeat(
            self._redis, registration, heartbeat_interval_s, lease_ms,
            status=lambda: (self.state, len(self._held)), on_command=self._on_command,
            log=self._log,
        )  # fmt: skip

    @property
    def in_flight(self) -> int:
        """Messages yielded and not yet settled."""
        return len(self._held)

    # ---- the context manager and the iterator -----------------------------------------

    async def __aenter__(self) -> Worker:
        """Register, return what a previous incarnation with this id held; QueueError
        when Redis cannot be used."""
        try:
            await self._heartbeat.beat()
            await self._recover()
        except BaseException:
            await self._close_client()
            raise
        await self._warn_durability()
        for name, job in (("lifecycle", self._lifecycle()), ("heartbeat", self._heartbeat.run()),
                          ("reconcile", self._reconcile_forever())):  # fmt: skip
            task = asyncio.create_task(job, name=f"worker-{name}")
            task.add_done_callback(self._task_done)
            self._tasks.append(task)  # the lifecycle first: the exit waits for it
        if self._handle_signals:
            loop = asyncio.get_running_loop()
            for sig in _SIGNALS:
                loop.add_signal_handler(sig, self.stop)
        self._log.info("consuming in-process: concurrency=%d", self.concurrency)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, _: TracebackType | None
    ) -> None:
        """A cold stop: what is still held goes back to the queue; then report and leave."""
        if self._handle_signals:
            loop = asyncio.get_running_loop()
            for sig in _SIGNALS:
                loop.remove_signal_handler(sig)
        self._stops = max(self._stops + 1, 2)
        self._notify()
        with contextlib.suppress(Exception):
            await asyncio.shield(self._tasks[0])  # the lifecycle: a cold drain, then it ends
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.state is not ConsumerState.DRAINED:  # the lifecycle crashed: push back here
            await self._held.push_back_all()
            self.state = ConsumerState.DRAINED
        try:
            await redisqueue.protect(self._redis, self.consumer_id, 0, self.queue)
            await self._heartbeat.beat()
            await self._heartbeat.release()
        except QueueError as e:
            self._log.warning("could not publish the final state: %s", e)
        await self._close_client()
        self._log.info("stopped")

    def __aiter__(self) -> Worker:
        return self

    async def __anext__(self) -> Message:
        """The next message; waits while drained or while ``concurrency`` are held; ends
        (StopAsyncIteration) after a stop has drained."""
        while True:
            await self._until(lambda: self._ended or (self._may_take() and not self._held.full))
            if self._ended:
                raise StopAsyncIteration
            message = await self._held.take(self._may_take)
            if message is not None:
                return message

    # ---- control ------------------------------------------------------------------

    def stop(self) -> None:
        """First call: drain, then end the iteration. Second call: do not wait for held
        messages (they go back to the queue). What SIGTERM and SIGINT do."""
        self._stops += 1
        self._log.info("stop requested" if self._stops == 1 else "second stop: cold stop")
        self._notify()

    async def protect(self, seconds: float = 7200) -> None:
        """Keep this worker's pod out of scale-downs for ``seconds`` (0 ends it early); it
        ends by itself. As the sidecar's ``PUT /protection``: at most 172800 (48 h)."""
        _check(0 <= seconds <= redisqueue.MAX_PROTECTION_S,
               f"seconds: {seconds} is out of range 0..{redisqueue.MAX_PROTECTION_S}")  # fmt: skip
        await redisqueue.protect(self._redis, self.consumer_id, seconds, self.queue)
        self._log.info("scale-in protection %s", f"on for {seconds:g}s" if seconds else "off")

    async def protection_s(self) -> float:
        """Seconds of scale-in protection left (0: not protected)."""
        return await redisqueue.protection_ms(self._redis, self.consumer_id, self.queue) / 1000

    # ---- drain and the background tasks ------------------------------------------------

    def _may_take(self) -> bool:
        running = self.state is ConsumerState.RUNNING
        return running and not self._drain_requested and not self._stops

    async def _lifecycle(self) -> None:
        """Run ↔ drained on the controller's commands, until a stop: then drain and end."""
        while True:
            await self._until(lambda: self._drain_requested or self._stops > 0)
            await self._drain()
            await self._until(lambda: not self._drain_requested or self._stops > 0)
            if self._stops:
                self._ended = True
                self._notify()
                return
            self._set_state(ConsumerState.RUNNING)

    async def _drain(self) -> None:
        self._set_state(ConsumerState.DRAINING)
        started = time.monotonic()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._drain_timeout_s):
                await self._until(lambda: not self._held or self._stops >= 2)
        interrupted = len(self._held)
        pushed = await self._held.push_back_all()
        self._set_state(ConsumerState.DRAINED)
        self._log.info("drained in %.1fs: %d messages interrupted, %d pushed back to the queue",
                       time.monotonic() - started, interrupted, pushed)  # fmt: skip

    async def _recover(self) -> None:
        result = await redisqueue.requeue(
            self._redis, self._keys, max_deliveries=self._max_deliveries, force=True,
            reason=f"delivered {self._max_deliveries} times; its consumer restarted",
        )  # fmt: skip
        if result.requeued or result.dead_lettered or result.quarantined:
            self._log.warning("returned %d messages a previous incarnation held to the queue "
                              "(%d dead-lettered)", result.requeued + result.quarantined,
                              result.dead_lettered)  # fmt: skip

    async def _warn_durability(self) -> None:
        try:
            durability = await redisqueue.read_durability(self._redis)
        except QueueError as e:
            self._log.warning("could not read the Redis persistence settings: %s", e)
            return
        for warning in durability.warnings():
            self._log.warning("this Redis can lose messages: %s", warning)

    async def _reconcile_forever(self) -> None:
        """Return orphans (a take whose reply was lost) to the queue, as the sidecar does."""
        next_at = time.monotonic() + RECONCILE_INTERVAL_S
        while True:
            await asyncio.sleep(self._interval_s)
            dirty = self._held.ledger.dirty
            if not self._may_take() or (not dirty and time.monotonic() < next_at):
                continue
            next_at = time.monotonic() + RECONCILE_INTERVAL_S
            with contextlib.suppress(QueueError):  # still dirty: the next round tries again
                if returned := await self._held.ledger.reconcile(self._redis, self._keys):
                    self._log.warning("returned %d orphaned messages to the queue", returned)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self._log.error("%s crashed; stopping", task.get_name(), exc_info=task.exception())
            self._ended = True
            self._notify()

    def _on_command(self, command: Command) -> None:
        if command is Command.DRAIN and not self._drain_requested:
            self._log.info("drain requested by the controller")
            self._drain_requested = True
            self._notify()
        elif command is Command.RUN and self._drain_requested:
            self._log.info("drain cancelled by the controller: taking messages again")
            self._drain_requested = False
            self._notify()

    def _set_state(self, state: ConsumerState) -> None:
        if state is not self.state:
            self._log.info("state %s", state.value)
        self.state = state
        self._heartbeat.poke()
        self._notify()

    def _notify(self) -> None:
        """Wake every ``_until``: something they wait on changed."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def _until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self._changed.wait()

    async def _close_client(self) -> None:
        if self._own_client:
            await self._redis.aclose()


def _check(ok: bool, problem: str) -> None:
    if not ok:
        raise ValueError(f"Worker: {problem}")
