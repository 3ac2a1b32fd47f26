"""The stream backend of the sidecar: ``autoscaler consume --stream NAME --group GROUP``.

The same consumer as for lists — slots, the circuit breaker, the forwarder, heartbeats and
the registry, the drain (stop taking, finish, hand back, ``drained``) and the cold stop —
with the list backend's Redis steps replaced by the stream's (``redisqueue.streams``):

take
    Every ``claim_interval_s`` (and while it finds some) a slot first claims (a
    handed-back entry, or a crashed consumer's, by the poison rule of
    ``redisqueue.streams``: a quarantined suspect is processed alone, the other slots
    taking nothing meanwhile), else reads a new one (``XREADGROUP … >``, blocking up to the
    take timeout) unless the quarantine waits for this consumer to hold nothing. A claimed
    entry already delivered more than ``--max-deliveries`` times is dead-lettered unsent
    (it kept killing its consumers).
deliver
    As for lists (``handler``): 2xx → ``XACK``; a 4xx verdict → dead letter now; an
    answered failure → counted in the PEL and retried in place; a processor outage (the
    ``Breaker``, keyed by entry id) → held, uncounted.
held
    The PEL is the truth. The slots' entries are touched every heartbeat (their idle time
    reset), so only a vanished consumer's entries become claimable. The drain hands every
    entry this consumer still owns back uncharged; a start judges a previous
    incarnation's (same consumer id) by the poison rule.

The consumer registers under the stream's name, so the controller's drain finds it as it
finds list consumers.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, replace

import aiohttp
from redis.asyncio import Redis

from autoscaler import redisqueue
from autoscaler.consumer.forward import Answer, Forwarder
from autoscaler.consumer.handler import MessageHandler
from autoscaler.consumer.metrics import ConsumerMetrics, Outcome
from autoscaler.consumer.settings import ConsumerSettings
from autoscaler.consumer.slots import Slots
from autoscaler.consumer.worker import PUSH_BACK_ATTEMPTS, Worker, make_throttler
from autoscaler.errors import QueueError
from autoscaler.redisqueue import streams
from autoscaler.redisqueue.streams import Claimed, Entry, Settled, StreamKeys

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamOptions:
    """What only the stream backend needs (flags ``--group``, ``--claim-min-idle``)."""

    # The consumer group; created at the stream's first entry (with the stream) if missing.
    group: str
    # Seconds an entry must sit untouched in another consumer's PEL before a claim takes
    # it. Held entries are touched every heartbeat, so this only has to outlast a few
    # heartbeats: a shorter value reclaims a crashed consumer's entries sooner.
    claim_min_idle_s: float = 15.0

    @property
    def claim_interval_s(self) -> float:
        """How often a slot looks for claimable entries when the last look found none."""
        return max(0.05, self.claim_min_idle_s / 4)


class StreamHandler(MessageHandler):
    """One entry's life: deliver, retry (counted in the PEL), dead-letter, ack."""

    def bind(self, k: StreamKeys) -> None:
        self._k = k

    async def process_entry(self, entry: Entry) -> bool:
        """True: processed, the caller acks. False: it left our hands or a drain began
        (then it stays in our PEL for the drain's hand-back)."""
        started = time.monotonic()
        try:
            return await self._deliver_entry(entry)
        finally:
            self._metrics.processing_s.observe(time.monotonic() - started)

    async def _deliver_entry(self, entry: Entry) -> bool:
        body, count = entry.body, entry.count
        if len(body) > self._s.max_message_bytes:
            reason = (f"entry is {len(body)} bytes, over the limit of "
                      f"{self._s.max_message_bytes} (--max-message-bytes)")  # fmt: skip
            await self.settle(entry, reason, reject=True)
            return False
        answer, count, reason = await self.forward(
            body,
            count,
            lambda: entry.entry_id,
            lambda n, why: self._retry_entry(replace(entry, count=n), why),
            {"X-Stream-Entry-Id": entry.entry_id},
        )
        if answer is Answer.REJECT:
            await self.settle(replace(entry, count=count), reason, reject=True)
        return answer is Answer.OK

    async def _retry_entry(self, entry: Entry, reason: str) -> int:
        """The next delivery's count, or 0 when the entry left our hands or a drain began."""
        settled, count = await self.settle(entry, reason, reject=False)
        if settled is not Settled.RETRY:
            return 0
        self._metrics.count(Outcome.RETRIED)
        delay_s = self.backoff_s(entry.count)
        self._log.info("delivery %d of entry %s failed (%s); retrying in %.2fs",
                       entry.count, entry.entry_id, reason, delay_s)  # fmt: skip
        return 0 if await self.pause(delay_s) else count

    async def settle(self, entry: Entry, reason: str, *, reject: bool) -> tuple[Settled, int]:
        """Charge a failed delivery (or dead-letter at the limit), or dead-letter now."""
        settled, count = await self.redis_op(
            lambda: streams.settle(self._redis, self._k, entry, reject=reject,
                                   max_deliveries=self._s.max_deliveries, reason=reason)
        )  # fmt: skip
        if settled is Settled.DEAD:
            self._metrics.count(Outcome.DEAD_LETTERED)
            self._log.warning("dead-lettered entry %s to %s after %d deliveries: %s",
                              entry.entry_id, self._k.dead, count, reason)  # fmt: skip
        elif settled is Settled.GONE:
            self._log.warning("entry %s is no longer ours (claimed by another consumer, "
                              "acknowledged or deleted)", entry.entry_id)  # fmt: skip
        return settled, count

    async def ack_entry(self, entry: Entry) -> None:
        if await self.redis_op(lambda: streams.ack(self._redis, self._k, entry.entry_id)):
            self._metrics.count(Outcome.ACKED)
        else:
            self._log.warning("acked entry %s was no longer pending (claimed and acknowledged "
                              "by another consumer meanwhile)", entry.entry_id)  # fmt: skip


class StreamSlots(Slots):
    """The slot tasks of a stream consumer (``Slots`` starts, counts and cancels them)."""

    def bind(self, k: StreamKeys, options: StreamOptions, handler: StreamHandler) -> None:
        self._k, self._options, self._stream = k, options, handler
        self.held: dict[str, Entry] = {}  # entry id → what a slot holds now
        self._cursor = "-"
        self._claim_due_at = 0.0
        # The poison rule (``redisqueue.streams``): a quarantined entry is processed with
        # nothing else held. ``alone`` names it; ``free`` is set while there is none. The
        # lock orders claims and the check after a read: an entry read while a claim made
        # us hold one alone is handed back, uncharged.
        self.alone: str | None = None
        self._free = asyncio.Event()
        self._free.set()
        self._claim_lock = asyncio.Lock()
        self._hold_reads = False  # the last claim said the quarantine waits for us
        # Reads in flight. A suspect is sent only once none is: a read sent before the
        # claim made us hold it alone may land after it, and until that entry is handed
        # back we hold two — a crash then would charge neither, and the poison would be
        # delivered again uncharged (tests/test_streams_poison.py, 1 run in 3 without).
        self._reading = 0
        self._reads_done = asyncio.Event()
        self._reads_done.set()

    async def _run(self, slot: int) -> None:
        while not self._stopping.is_set():
            await self._breaker.closed(self._stopping)
            if self._stopping.is_set():
                return
            entry = await self._take_entry()
            if entry is None:
                continue
            self.held[entry.entry_id] = entry
            self._ledger.took(redisqueue.Delivery(entry.entry_id.encode(), entry.count))
            self.in_flight += 1
            try:
                if await self._stream.process_entry(entry):
                    await self._stream.ack_entry(entry)
            finally:
                self.in_flight -= 1
                self.held.pop(entry.entry_id, None)
                self._ledger.left(entry.entry_id.encode())
                self._release(entry.entry_id)

    def _release(self, entry_id: str) -> None:
        if self.alone == entry_id:
            self.alone = None
            self._free.set()

    async def _take_entry(self) -> Entry | None:
        if self._throttler is not None:
            await self._throttler.acquire()  # type: ignore[no-untyped-call]
        if self.alone is not None:  # a suspect is processed alone: take nothing meanwhile
            await self._wait_free()
            return None
        try:
            entry = await self._claim() if time.monotonic() >= self._claim_due_at else None
            if entry is None and not self._hold_reads:
                block_ms = round(self._s.take_timeout_s * 1000)
                entry = await self._read_new(block_ms)
        except QueueError as e:
            self._take_failures += 1
            self._handler.redis_failed(e, self._take_failures)
            await self._handler.pause(self._handler.backoff_s(self._take_failures))
            return None
        self._take_failures = 0
        if entry is not None and entry.count > self._s.max_deliveries:
            reason = (f"delivered {entry.count} times; claimed after its consumers vanished "
                      "holding it")  # fmt: skip
            await self._stream.settle(entry, reason, reject=True)
            self._release(entry.entry_id)
            return None
        return entry

    async def _wait_free(self) -> None:
        """Until no suspect is held alone here, or a drain or stop begins."""
        waiter = asyncio.ensure_future(self._free.wait())
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait((waiter, stopper), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            stopper.cancel()

    async def _read_new(self, block_ms: int) -> Entry | None:
        self._reading += 1
        self._reads_done.clear()
        try:
            entry = await streams.read_new(self._redis, self._k, block_ms)
            if entry is None:
                return None
            async with self._claim_lock:  # a claim in flight may have made us hold one alone
                if self.alone is None:
                    return entry
            await self._handler.redis_op(lambda: streams.hand_back(
                self._redis, self._k, uncharge=True, entry_ids=[entry.entry_id]))  # fmt: skip
            self._log.info("handed back entry %s, read while suspect %s is held alone",
                           entry.entry_id, self.alone)  # fmt: skip
            return None
        finally:
            self._reading -= 1
            if not self._reading:
                self._reads_done.set()

    async def _claim(self) -> Entry | None:
        """A claimable entry, or None; while the quarantine waits for this consumer to hold
        nothing, no read: claim again after a pause."""
        min_idle_ms = round(self._options.claim_min_idle_s * 1000)
        async with self._claim_lock:
            verdict, self._cursor, entry = await streams.claim(
                self._redis, self._k, min_idle_ms, self._cursor
            )
            if verdict is Claimed.ALONE and entry is not None:
                self.alone = entry.entry_id
                self._free.clear()
            self._hold_reads = verdict is Claimed.WAIT
        if verdict is Claimed.ALONE and not self._reads_done.is_set():
            await self._reads_done.wait()  # at most one take timeout: see ``_reading``
        if entry is not None:
            what = "a suspect, alone" if verdict is Claimed.ALONE else "handed back"
            self._log.info("claimed entry %s (delivery %d): %s", entry.entry_id, entry.count,
                           what)  # fmt: skip
            return entry
        if verdict is Claimed.WAIT:  # quarantined entries wait for us to hold nothing
            self._claim_due_at = 0.0
            await self._handler.pause(self._options.claim_interval_s)
            return None
        if self._cursor == "0-0":  # a whole pass found nothing: look again later
            self._cursor = "-"
            self._claim_due_at = time.monotonic() + self._options.claim_interval_s
        return None


class StreamWorker(Worker):
    """``Worker`` (lifecycle, drain, heartbeat) over a stream; ``settings.queue`` names the
    stream and ``settings.dead_letter`` the dead-letter stream (default ``<stream>:dead``)."""

    def __init__(
        self,
        redis: Redis,
        session: aiohttp.ClientSession,
        settings: ConsumerSettings,
        metrics: ConsumerMetrics,
        options: StreamOptions,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._options = options  # before Worker.__init__, which asks ``_backend``
        self._k = StreamKeys(settings.queue, options.group, settings.consumer_id,
                             settings.dead_letter)  # fmt: skip
        super().__init__(redis, session, settings, metrics, rng=rng)

    def _backend(self, forwarder: Forwarder, rng: random.Random) -> tuple[MessageHandler, Slots]:
        handler = StreamHandler(self._redis, forwarder, self._s, self._metrics, self._log,
                                stopping=self._stopping, rng=rng, breaker=self.breaker,
                                ledger=self._ledger)  # fmt: skip
        handler.bind(self._k)
        slots = StreamSlots(
            self._redis, self._s, handler, self._metrics, self._log, stopping=self._stopping,
            throttler=make_throttler(self._s.rate_per_s), on_exit=self._task_done,
            breaker=self.breaker, ledger=self._ledger,
        )  # fmt: skip
        slots.bind(self._k, self._options, handler)
        self._stream_slots = slots
        return handler, slots

    async def _recover(self) -> None:
        """Create the group if missing; hand back what a previous incarnation held."""
        if await streams.ensure_group(self._redis, self._k):
            self._log.info("created consumer group %s at the first entry", self._k.group)
        judged = await streams.recover(self._redis, self._k)
        if judged:
            self._log.warning("quarantined %d entries a previous incarnation held: each is "
                              "delivered again alone (charged only if it was alone)",
                              judged)  # fmt: skip

    async def _reconcile_forever(self) -> None:
        """Every heartbeat interval, reset the idle time of the entries the slots hold."""
        while True:
            await asyncio.sleep(self._s.heartbeat_interval_s)
            try:
                orphan_ms = round(self._options.claim_min_idle_s * 500)
                await streams.touch(self._redis, self._k, list(self._stream_slots.held), orphan_ms)
            except QueueError as e:
                self._handler.redis_failed(e, 1)

    async def _push_back_all(self) -> int:
        """Hand every entry we still own back, uncharged: the next claim anywhere takes it."""
        for attempt in range(1, PUSH_BACK_ATTEMPTS + 1):
            try:
                handed = await streams.hand_back(self._redis, self._k, uncharge=True)
            except QueueError as e:
                self._handler.redis_failed(e, attempt)
                await asyncio.sleep(self._handler.backoff_s(attempt))
                continue
            self._metrics.count(Outcome.PUSHED_BACK, handed)
            return handed
        self.failed = True
        self._log.error("could not hand back held entries: they stay pending on %s and are "
                        "claimed after --claim-min-idle", self._k.consumer_id)  # fmt: skip
        return 0
