"""The reconcile loop: inventory → due workloads → one batched read → policy → actions.

One scheduler task wakes when the earliest workload is due, takes every workload due
within ``batch_window_s`` (so workloads with the same interval share one Redis round trip
per server), reads all their triggers through the ``SourcePool`` in one call, runs the
pure policy for each, and starts at most one action per workload (a scale-up, or a
drain followed by a scale-down). A bad workload never stops the loop: its spec error is
an Event, its action errors are logged and backed off.

Steady state costs no Kubernetes call: replica counts come from the watch (``apply``),
statuses and Events are written only when a decision changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import random
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import replace
from itertools import chain
from operator import attrgetter
from typing import Any

from autoscaler.aio import MAX_HOLD_S, Pacer
from autoscaler.drain import Drainer, Reaper
from autoscaler.errors import AutoscalerError
from autoscaler.logs import log_event
from autoscaler.metrics import ControllerMetrics, watch_event_loop_lag
from autoscaler.policy import (
    Decision,
    Reading,
    ScalingSpec,
    band,
    decide,
    note_steady,
    steady_candidate,
    within,
)
from autoscaler.sources import SourcePool
from autoscaler.targets import Target
from autoscaler.workload import WorkloadEvent, WorkloadRef
from autoscaler.workloadseries import Child

from .durability import DurabilityWatch
from .memory import MemoryWatch
from .report import Reporter
from .statuses import StatusWriter
from .workload import Workload

logger = logging.getLogger(__name__)

MAX_IDLE_WAIT_S = 1.0  # re-check leadership and inventory at least this often
LEADER_POLL_S = 0.1  # how soon a standby notices it leads
JITTER = 0.05  # ±5% of the polling interval
STALE_CHECKS_AT_ONCE = 8  # releases in flight when a new leader finds stale drains
# workloads between two looks at the clock: a decided workload costs ~50-100 µs at a
# start (decide, report), so 500 held the loop ~50 ms between looks (lag at a start 80-111
# ms); a look costs ~0.1 µs a workload at 100 (docs/performance.md, goal 4)
YIELD_CHECK_EVERY = 100
# the young generation's threshold, per workload of the largest cycle (see ``cycle``)
YOUNG_PER_WORKLOAD = 2
STALE_RECHECK_S = 1.0  # a stale-drain check that failed, or found a busy workload: again after
_triggers_of = attrgetter("spec.triggers")
_due_at_of = attrgetter("due_at")


def _serviceable(workloads: Iterable[Workload], due_by: float = math.inf) -> list[Workload]:
    """The serviceable workloads (see ``controller.workload``) due by ``due_by``, in
    one comprehension: a property call per workload cost 1.25 ms a pass at 10,000, this
    0.40 (every cycle makes two passes: which workloads are due, and when the next one
    is)."""
    return [
        w
        for w in workloads
        if w.due_at <= due_by
        and w.spec is not None
        and w.managed_elsewhere is None
        and (w.action is None or w.action.done())
    ]


class Controller:
    def __init__(
        self,
        *,
        sources: SourcePool,
        target_factory: Callable[[WorkloadRef], Target],
        metrics: ControllerMetrics,
        drainer: Drainer | None = None,
        dry_run: bool = False,
        is_leader: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] | None = None,
        rng: random.Random | None = None,
        batch_window_s: float = 0.5,
        reaper: Reaper | None = None,
        reap_interval_s: float = 5.0,
        memory: MemoryWatch | None = None,
        durability: DurabilityWatch | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.sources = sources
        self.target_factory = target_factory
        self.metrics = metrics
        self.drainer = drainer
        self.dry_run = dry_run
        self.is_leader = is_leader
        self.clock = clock or time.monotonic
        self.rng = rng or random.Random()
        self.batch_window_s = batch_window_s
        self.reaper = reaper
        self.reap_interval_s = reap_interval_s
        self.memory = memory
        self.durability = durability
        # the calendar, for schedule floors and condition times (``clock`` may be monotonic)
        self.wall_clock = wall_clock
        self.statuses = StatusWriter(self._spawn)
        self.report = Reporter(
            self._spawn,
            dry_run=dry_run,
            wall_clock=wall_clock,
            write_status=lambda w, doc: self.statuses.submit(w.ref, w.target, doc),
        )
        self.workloads: dict[WorkloadRef, Workload] = {}
        self.cycles = 0
        self._wakeup = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        # workloads whose consumers this leader has not yet checked for stale drains
        self._unchecked: set[WorkloadRef] = set()
        self._stale_check: asyncio.Task[None] | None = None  # the check in the background
        self._checking: set[WorkloadRef] = set()  # the workloads it is checking now
        self._stale_found: set[WorkloadRef] = set()  # told to drain: to release, when idle
        self._stale_gate = asyncio.Semaphore(STALE_CHECKS_AT_ONCE)

    # ---- inventory ------------------------------------------------------------------

    def apply(self, event: WorkloadEvent) -> None:
        """Take one inventory change (from the Kubernetes watch or the local backend)."""
        if event.deleted:
            gone = self.workloads.pop(event.ref, None)
            if gone is not None and gone.action is not None:
                gone.action.cancel()
            self._unchecked.discard(event.ref)
            self.statuses.forget(event.ref)
            self.metrics.forget(event.ref.namespace, event.ref.name)
            self.metrics.workloads.set(len(self.workloads))
            return
        w = self.workloads.get(event.ref)
        if w is None:
            w = Workload(event.ref, self.target_factory(event.ref), event.replicas)
            w.due_at = self.clock()
            self.workloads[event.ref] = w
            self.metrics.workloads.set(len(self.workloads))
        if not w.busy:
            w.current = event.replicas
        w.managed_elsewhere = event.managed_elsewhere
        if w.update_annotations(event.annotations):
            w.due_at = self.clock()
            self._unchecked.add(event.ref)  # new, or new triggers or drain setting: check
            if w.spec is not None:
                self.metrics.track(event.ref.namespace, event.ref.name, w.spec, w)
        self._report_spec(w)
        self._wakeup.set()

    def _report_spec(self, w: Workload) -> None:
        ns, name = w.ref.namespace, w.ref.name
        self.metrics.spec_valid.labels(ns, name).set(0 if w.error else 1)
        if w.error is not None and str(w.error) != w.reported_error:
            w.reported_error = str(w.error)
            log_event(
                logger,
                "invalid spec",
                logging.WARNING,
                namespace=ns,
                workload=name,
                key=w.error.key,
                error=str(w.error),
            )
            self._spawn(w.target.record_event("InvalidSpec", str(w.error), warning=True))
        elif w.error is None:
            w.reported_error = None
        if w.managed_elsewhere and w.managed_elsewhere != w.reported_conflict:
            w.reported_conflict = w.managed_elsewhere
            message = f"left alone: {w.managed_elsewhere} also scales this workload"
            log_event(
                logger, "conflict", logging.WARNING, namespace=ns, workload=name, error=message
            )
            self._spawn(w.target.record_event("ManagedElsewhere", message, warning=True))

    # ---- scheduling -----------------------------------------------------------------

    async def run(self, synced: asyncio.Event | None = None) -> None:
        """Schedule cycles until cancelled; then cancel and await every action. With
        ``synced`` (the inventory's first listing taken in: ``WorkloadWatcher.synced``),
        the first cycle waits for it, so that it covers the whole inventory in one batch,
        and no automatic garbage collection runs until the first cycle has run (the
        collector runs while the process stands by, and pauses again for the first cycle
        it runs as a new leader): at 10,000 workloads, collections walking a heap that only
        grew (list pages, the inventory, its first decisions) were 27% of the start's CPU
        (py-spy --native); the first cycle then freezes what it built (``cycle``)."""
        self._spawn(watch_event_loop_lag(self.metrics.event_loop_lag))
        if self.reaper is not None:
            self._spawn(self._reap_forever(self.reaper))
        if self.memory is not None:
            self._spawn(self.memory.run(self.workloads.values, self._warn, self.is_leader))
        if self.durability is not None:
            watch = self.durability.run(self.workloads.values, self._warn, self.is_leader)
            self._spawn(watch)
        paused_gc = synced is not None and gc.isenabled()
        if paused_gc:
            gc.disable()
        try:
            if synced is not None:
                await synced.wait()
            while True:
                if not self.is_leader():
                    if paused_gc:
                        paused_gc = False
                        gc.enable()
                    await self._until_leading()
                    if not self.cycles and gc.isenabled():
                        # a standby just elected: its first cycle decides the whole
                        # inventory, as a start's does, over a heap no cycle has frozen yet
                        paused_gc = True
                        gc.disable()
                await self._wait_until_due()
                await self.cycle()
                if paused_gc:
                    paused_gc = False
                    gc.enable()
                # after the cycle, never before: at 10,000 workloads the check's setup and
                # its Redis scripts ran ahead of the first cycle's read (~0.1-0.2 s, goal 6)
                if self._unchecked or self._stale_found:
                    self._release_stale_drains()
        finally:
            if paused_gc:
                gc.enable()
            await self.aclose()

    async def _until_leading(self) -> None:
        """Stand by until this controller leads: ``_stand_by`` once (it walks every
        workload: not at every poll), then a look every LEADER_POLL_S."""
        self._stand_by()
        while not self.is_leader():  # noqa: ASYNC110 (is_leader is any callable, not an Event)
            await asyncio.sleep(LEADER_POLL_S)

    def _stand_by(self) -> None:
        """Not leading (yet, or any more): stop every action; the leader owns them now."""
        self._unchecked.update(self.workloads)  # leading again: check for stale drains again
        self._stale_found.clear()
        if self._stale_check is not None:
            self._stale_check.cancel()
        for w in self.workloads.values():
            if w.busy and w.action is not None:
                log_event(
                    logger,
                    "action cancelled",
                    namespace=w.ref.namespace,
                    workload=w.ref.name,
                    message="not the leader",
                )
                w.action.cancel()

    def _release_stale_drains(self) -> None:
        """Leading: release the workloads the check found (each as its action, started
        here, between two cycles, so that a cycle never starts a drain over it), and
        start the check for the workloads not yet checked, in the background (one at a
        time), so that the first cycle never waits for it. A busy one waits its turn."""
        if self.drainer is None or self.dry_run:
            self._unchecked.clear()
            self._stale_found.clear()
            return
        for ref in list(self._stale_found):
            w = self.workloads.get(ref)
            spec = w.spec if w is not None else None
            if w is not None and spec is not None and w.busy:
                continue
            self._stale_found.discard(ref)
            if w is not None and spec is not None:
                w.action = self._spawn(self._release_stale(w, spec, self.drainer))
        if self._unchecked and (self._stale_check is None or self._stale_check.done()):
            self._stale_check = self._spawn(self._check_stale_drains(self.drainer))

    async def _check_stale_drains(self, drainer: Drainer) -> None:
        """Find the consumers that an unfinished drain left idle (a leader SIGKILLed
        mid-drain), to be put back to work; otherwise a steady workload would keep them
        idle until its next scale-down.

        One round trip per Redis server for every unchecked workload
        (``Drainer.stale_queues``): at 10,000 workloads a registry read per queue took the
        whole connection pool for minutes, and the cycle's reads and a backlog's scale-up
        waited (docs/performance.md, goal 7). Only a workload with a consumer told to
        drain is released (``_release_stale_drains``); the workloads of a server that
        failed are checked again after ``STALE_RECHECK_S``."""
        refs, self._unchecked = self._unchecked, set()
        self._checking = refs
        try:
            await self._find_stale(refs, drainer)
        finally:
            self._checking = set()

    async def _find_stale(self, refs: set[WorkloadRef], drainer: Drainer) -> None:
        by_server: dict[str | None, dict[str, list[WorkloadRef]]] = {}
        # after a start, 10,000 workloads at once: 82 ms without a yield (goal 4)
        pacer = Pacer(MAX_HOLD_S, YIELD_CHECK_EVERY)
        for i, ref in enumerate(refs):
            await pacer.after(i)
            w = self.workloads.get(ref)
            spec = w.spec if w is not None else None
            if w is None or spec is None or not spec.drain or w.managed_elsewhere is not None:
                continue
            for trigger in spec.queue_triggers:
                for queue in trigger.queues:
                    by_server.setdefault(trigger.redis_url, {}).setdefault(queue, []).append(ref)
        again: set[WorkloadRef] = set()
        stale: set[WorkloadRef] = set()
        for url, queues in by_server.items():
            try:
                found = await drainer.stale_queues(url, sorted(queues))
            except AutoscalerError as e:
                log_event(logger, "stale drain check failed", logging.WARNING, error=str(e))
                again.update(chain.from_iterable(queues.values()))
                continue
            stale.update(chain.from_iterable(queues[q] for q in found if q in queues))
        if not self.is_leader():  # lost meanwhile: the next leadership checks them all
            self._unchecked |= refs
            return
        self._stale_found |= stale - again
        if again:
            self._unchecked |= again
            await asyncio.sleep(STALE_RECHECK_S)

    async def _release_stale(self, w: Workload, spec: ScalingSpec, drainer: Drainer) -> None:
        async with self._stale_gate:
            await drainer.release_stale(w.target, spec)

    def queues_by_server(self) -> dict[str | None, set[str]]:
        """Every Redis list and stream of every valid workload, grouped by server URL (a
        stream's dead consumers hold no processing list: the reaper only unregisters them;
        their entries are claimed by the live ones)."""
        out: dict[str | None, set[str]] = {}
        for w in self.workloads.values():
            for trigger in w.spec.queue_triggers if w.spec else ():
                out.setdefault(trigger.redis_url, set()).update(trigger.queues)
        return out

    async def _reap_forever(self, reaper: Reaper) -> None:
        """Every ``reap_interval_s``: requeue what dead consumers held, on every server."""
        while True:
            await asyncio.sleep(self.reap_interval_s)
            if not self.is_leader():
                continue
            for url, queues in self.queues_by_server().items():
                try:
                    await reaper.reap(url, sorted(queues))
                except AutoscalerError as e:
                    log_event(logger, "reap failed", logging.WARNING, error=str(e))
                except Exception:  # a reaper bug must not end reaping for good
                    logger.exception("reaper crashed")

    async def _wait_until_due(self) -> None:
        next_due = min(map(_due_at_of, _serviceable(self.workloads.values())), default=math.inf)
        delay = min(MAX_IDLE_WAIT_S, next_due - self.clock())
        if delay <= 0:
            await asyncio.sleep(0)  # never starve the other tasks, even when always due
        else:
            self._wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wakeup.wait()

    async def cycle(self) -> int:
        """Read and decide every workload due now; returns how many were decided."""
        started = time.perf_counter()
        horizon = self.clock() + self.batch_window_s
        due = _serviceable(self.workloads.values(), horizon)
        if not due:
            return 0
        # each workload's spec as read: apply() may replace one while the cycle awaits
        # (the read, a yield below), and its readings are the triggers of this one
        specs = [w.spec for w in due]
        triggers = list(chain.from_iterable(map(_triggers_of, due)))
        readings = await self.sources.read(triggers)
        if self.memory is not None and self.memory.ratios:  # only with watermarks in use
            readings = self.memory.annotate(triggers, readings)
        now = self.clock()
        offset = 0
        # uniform(-JITTER, JITTER) inlined, the same numbers (low + span * random()), and
        # the loop's constants as locals: ~1 ms of a moving cycle at 10,000 (goal 1)
        random, low, span, every = self.rng.random, -JITTER, 2 * JITTER, YIELD_CHECK_EVERY
        steady_counters: list[Child] = []
        # The hot loop (10,000 workloads per cycle): a steady workload (see policy.steady,
        # split as steady_candidate + same count + same readings) costs a comparison, its
        # next due time and one counted decision, and allocates nothing (no slice: every
        # object made here feeds the garbage collector); one whose readings moved within
        # its band (policy.band) costs a slice more; the rest goes through _decide.
        held_since = time.perf_counter()
        for i, (w, spec) in enumerate(zip(due, specs, strict=True)):
            assert spec is not None
            if not i % every and time.perf_counter() - held_since > MAX_HOLD_S:
                # a cycle that decides thousands (a start, a burst of moving queues) lets
                # the other tasks run every ~MAX_HOLD_S: event-loop lag at a start at
                # 10,000 484 ms → see docs/performance.md, goal 4
                await asyncio.sleep(0)
                held_since = time.perf_counter()
            count = len(spec.triggers)
            start, offset = offset, offset + count
            if w.spec is not spec:
                continue  # a new spec since the read: due again at once (apply)
            w.due_at = now + spec.polling_interval_s * (1.0 + (low + span * random()))
            previous, last = w.steady_decision, w.last_readings
            if (
                previous is not None
                and last is not None  # as long as the spec: a new spec resets both
                and previous.current == w.current
                and (readings[start] == last[0] if count == 1 else readings[start:offset] == last)
            ):
                w.skipped_at = now  # same decision again, nothing to write
                if w.decision_counter is not None:
                    steady_counters.append(w.decision_counter)
                continue
            held, decided = w.band, w.last_decision  # the band assumes its current count
            if (
                held is not None
                and decided is not None
                and decided.current == w.current
                and (
                    within(held, readings[start:offset], now)
                    if count > 1
                    # one trigger: policy.within inlined, ~5 ms of a moving cycle at 10,000
                    else now <= held.until
                    and (value := readings[start].value) is not None
                    and held.values[0][0] <= value <= held.values[0][1]
                )
            ):
                w.last_readings = readings[start:offset]  # the gauges show them
                w.skipped_at = now  # the same decision (but its message), nothing to write
                if w.decision_counter is not None:
                    steady_counters.append(w.decision_counter)
                continue
            if self.workloads.get(w.ref) is not w:
                continue  # deleted since the read: nothing to decide or write
            self._decide(w, spec, readings[start:offset], now)
        self.metrics.count_decisions(steady_counters)
        self.cycles += 1
        if self.cycles == 1:
            # The inventory and its specs live as long as the process: out of the
            # collector's sight, a full collection walks ~10× fewer objects at 10,000
            # workloads (its pauses: 0.45-0.67 s → see docs/performance.md, lag).
            gc.freeze()
        young, *older = gc.get_threshold()
        if young < YOUNG_PER_WORKLOAD * len(due):
            # A moving cycle builds each moved queue's new reading while its workload
            # still holds the last one (freed as the loop stores the new): ~1 object a
            # workload that lives until the loop reaches it, none left after. A young
            # generation of 700 (Python's default) collected 13-14 times a cycle at
            # 10,000 for nothing (3.6-5.6 ms by gc.callbacks, docs/performance.md, goal 1).
            gc.set_threshold(YOUNG_PER_WORKLOAD * len(due), *older)
        self.metrics.loop_duration.observe(time.perf_counter() - started)
        return len(due)

    # ---- deciding -------------------------------------------------------------------

    def _decide(self, w: Workload, spec: ScalingSpec, readings: list[Reading], now: float) -> None:
        """Run the policy for a workload that ``cycle`` did not find steady or within
        its band; first record the cycles skipped since the last decision (note_steady)."""
        previous = w.last_decision
        if w.skipped_at is not None and previous is not None:
            w.state = note_steady(spec, w.state, w.skipped_at, previous)
            w.skipped_at = None
        wall = self.wall_clock() if spec.schedule is not None else None
        decision, w.state = decide(spec, w.current, readings, w.state, now, wall)
        self._observe(w, spec, readings, decision)
        w.last_decision, w.last_readings = decision, readings
        w.steady_decision = decision if steady_candidate(spec, decision) else None
        w.band = band(spec, decision, readings, w.state)
        # in substance: what the log line, the conditions and the status annotation show
        reported = (
            decision.replicas,
            decision.current,
            decision.reason,
            decision.active,
            bool(w.trigger_errors),
        )
        if reported != w.reported:
            w.reported = reported
            log_event(
                logger,
                "decision",
                namespace=w.ref.namespace,
                workload=w.ref.name,
                current=decision.current,
                desired=decision.replicas,
                reason=str(decision.reason),
                message=decision.message,
                dry_run=self.dry_run,
            )
            self.report.decided(w, spec, decision, readings)
        if decision.changed and not self.dry_run:
            w.action = self._spawn(self._act(w, spec, decision))

    def _observe(
        self, w: Workload, spec: ScalingSpec, readings: list[Reading], decision: Decision
    ) -> None:
        """Count the decision and failed reads. The gauges (readings, desired, current,
        fallback) read ``w`` when scraped (``metrics.track``): nothing to set here."""
        m, ns, name = self.metrics, w.ref.namespace, w.ref.name
        for trigger, reading in zip(spec.triggers, readings, strict=True):
            if reading.value is None:
                m.source_errors.labels(ns, name, trigger.name).inc()
                self.report.trigger_failed(w, trigger.name, reading.error)
        previous = w.last_decision
        if w.decision_counter is None or previous is None or previous.reason != decision.reason:
            # labels() only when the reason changes: ~3 µs a call, 30 ms a moving cycle
            w.decision_counter = m.decisions.labels(ns, name, str(decision.reason))
        w.decision_counter.inc()
        if w.trigger_errors:
            self.report.triggers_read(w, spec, readings)

    def _warn(self, w: Workload, reason: str, message: str) -> None:
        """A Warning Event on ``w`` (the caller logged it); none in a dry run."""
        if not self.dry_run:
            self._spawn(w.target.record_event(reason, message, warning=True))

    async def recheck(self, w: Workload) -> int | None:
        """A fresh decision for ``w`` without committing it (a drain asks: still wanted?)."""
        spec = w.spec
        if spec is None:
            return None
        readings = await self.sources.read(list(spec.triggers))
        if any(r.value is None for r in readings):
            return None
        if self.memory is not None and self.memory.ratios:
            readings = self.memory.annotate(spec.triggers, readings)
        wall = self.wall_clock() if spec.schedule is not None else None
        decision, _ = decide(spec, w.current, readings, replace(w.state), self.clock(), wall)
        return decision.replicas

    # ---- acting ---------------------------------------------------------------------

    async def _act(self, w: Workload, spec: ScalingSpec, decision: Decision) -> None:
        ns, name = w.ref.namespace, w.ref.name
        # No registry read before a scale-up: stale drains are released by the check a
        # leader makes in the background (``_check_stale_drains``), and a read per
        # scale-up made thousands of them share the Redis pool at a start (goal 7). A
        # drain before that check reached the workload releases them first, so that it
        # ranks afresh what a dead leader left behind (rare: one workload's queues).
        unchecked = any(w.ref in s for s in (self._unchecked, self._checking, self._stale_found))
        if decision.replicas < w.current and spec.drain and self.drainer and unchecked:
            self._stale_found.discard(w.ref)
            try:
                await self.drainer.release_stale(w.target, spec)
            except AutoscalerError as e:  # the drain reads the registry again: go on
                log_event(logger, "release stale drains failed", logging.WARNING,
                          namespace=ns, workload=name, error=str(e))  # fmt: skip
        try:
            if decision.replicas > w.current or not spec.drain or self.drainer is None:
                await w.target.scale(decision.replicas)
                written = decision.replicas
            else:
                written = await self.drainer.scale_down(
                    w.target, spec, w.current, decision.replicas, lambda: self.recheck(w)
                )
        except AutoscalerError as e:
            w.failures += 1
            w.due_at = self.clock() + min(60.0, spec.polling_interval_s * 2**w.failures)
            log_event(
                logger,
                "scale failed",
                logging.WARNING,
                namespace=ns,
                workload=name,
                desired=decision.replicas,
                error=str(e),
            )
            return
        w.failures = 0
        if written == w.current:
            return
        direction = "up" if written > w.current else "down"
        log_event(
            logger,
            "scaled",
            namespace=ns,
            workload=name,
            direction=direction,
            current=w.current,
            desired=written,
            reason=str(decision.reason),
        )
        self.metrics.scale_events.labels(ns, name, direction).inc()
        w.current = written
        await w.target.record_event(
            str(decision.reason), f"scaled {direction} to {written}: {decision.message}"
        )
        w.due_at = min(w.due_at, self.clock() + spec.polling_interval_s)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(self._guard(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        # Cancelled before it ever ran (a shutdown, lost leadership): close ``coro`` too,
        # or it is reported as "never awaited" when collected. A no-op once it has run.
        task.add_done_callback(lambda _: coro.close())
        return task

    @staticmethod
    async def _guard(coro: Coroutine[Any, Any, None]) -> None:
        """A failing side task (an Event, a status write) is logged, never fatal."""
        try:
            await coro
        except AutoscalerError as e:
            log_event(logger, "side effect failed", logging.WARNING, error=str(e))
        except Exception:
            logger.exception("side task crashed")

    async def aclose(self) -> None:
        """Cancel every action and side task and wait for them (clean shutdown)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
