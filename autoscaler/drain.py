"""The scale-down protocol and the reaper: no message lost when replicas go away.

Drain (N → M < N), written against the ``Target`` protocol and the registry in Redis:

0. hold it while the replicas belong to two or more ReplicaSets (a Deployment's rollout,
   in progress or paused): Kubernetes would split the scale-down across them in
   proportion, each ranking only its own pods, so no choice of victims would hold
   (``ScaleDownHeld`` Event, every decision, until one ReplicaSet is left);
1. pick N−M *victims*: replicas not scheduled, then not ready, then without a live
   registered consumer, then idle, then fewest in flight, then newest — never a replica
   with a consumer under scale-in protection (``redisqueue.protect``): with too few
   unprotected replicas the scale-down stops short, and waits (reason
   ``ScaleDownProtected``) if none is left; protection ends by itself at its expiry. A
   StatefulSet's victims are its highest ordinals, the only pods it removes;
2. ask each victim's consumer to drain (registry ``command = drain``) and give the
   victim the lowest ``controller.kubernetes.io/pod-deletion-cost``, so the ReplicaSet
   removes exactly these pods (not a StatefulSet's: it ignores the cost); a victim
   already gone (404) is skipped;
3. wait until every victim's consumer reports ``drained`` (or its lease died, or
   ``drain-timeout`` passed — its sidecar pushes back what it still holds on SIGTERM); a
   victim picked while its sidecar was still starting (running, nothing registered yet)
   is waited for until its consumer registers, and then told to drain too;
   meanwhile re-decide every polling interval: if the load rose so that fewer victims
   are wanted, cancel — victims go back to ``running`` and get back the cost they had
   before (the user's own, or none);
4. rank what is there now as Kubernetes will (``removal_order``: readiness beats cost):
   if it would remove a pod that is not a drained victim — one turned not-ready, one
   replacing a deleted victim — or a victim's consumer registered too late to have
   drained, cancel, and let the next decision pick again;
5. write M, conditional on the count the drain started from (a scale made meanwhile by
   someone else stands: cancel, decide again from it); then check which replicas went
   away and report (Event + metric) any that was not a drained victim.

The reaper returns the processing lists of consumers whose lease expired to their queue
(``redisqueue.requeue``, atomic and safe with two controllers), under the poison rule: a
message held alone is charged and dead-lettered at ``max-deliveries``; messages held
together go to the quarantine, to be delivered again one at a time.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from redis.asyncio import Redis

from autoscaler.errors import AutoscalerError, ReplicasChangedError
from autoscaler.keys import Command, ConsumerState
from autoscaler.logs import log_event
from autoscaler.metrics import ControllerMetrics, DrainStage
from autoscaler.policy import ScalingSpec
from autoscaler.redisqueue import (
    ConsumerInfo,
    ConsumerKeys,
    dead_consumers,
    read_registry,
    requeue,
    set_command,
    told_to_drain,
)
from autoscaler.targets import Target
from autoscaler.workload import ReplicaInfo

logger = logging.getLogger(__name__)

LOWEST_DELETION_COST = -(2**31)  # int32 minimum: removed before any other pod
DEFAULT_MAX_DELIVERIES = 5
SETTLE_TIMEOUT_S = 30.0  # how long to watch the replicas go away after the scale-down
# A running victim created less than this long ago with no consumer registered is taken to
# be starting its sidecar (scheduling, image pull, interpreter start): the drain waits for
# it to register and drain, within drain-timeout (``Drainer._starting``).
REGISTRATION_GRACE_S = 60.0
SCALE_DOWN_PROTECTED = "ScaleDownProtected"  # reason: protected replicas held a scale-down
# Drain outcomes the operator is told with an Event: (reason, Warning?)
_TOLD = {
    DrainStage.CANCELLED: ("DrainCancelled", False),
    DrainStage.TIMED_OUT: ("DrainTimedOut", True),
}

RedisFor = Callable[[str | None], Redis]


@dataclass(frozen=True)
class Candidate:
    replica: ReplicaInfo
    consumers: tuple[tuple[str | None, ConsumerInfo], ...]  # (redis url, consumer)

    @property
    def rank(self) -> tuple[bool, bool, bool, bool, int, float]:
        live = [c for _, c in self.consumers if c.lease_alive and c.valid]
        in_flight = sum(c.in_flight or 0 for c in live)
        return (
            self.replica.scheduled,
            self.replica.ready,
            bool(live),
            in_flight > 0,
            in_flight,
            -self.replica.created_at,
        )

    @property
    def protected(self) -> bool:
        """A consumer of this replica asked for scale-in protection, and it has not expired."""
        return any(c.protected_ms > 0 for _, c in self.consumers)


def pick_victims(candidates: Iterable[Candidate], count: int) -> list[Candidate]:
    """The ``count`` replicas cheapest to remove (see the module docstring for the order);
    fewer when the others are protected from scale-in. A StatefulSet's are its highest
    ordinals, the only ones it ever removes: down to the first protected one."""
    listed = list(candidates)
    if any(c.replica.ordinal is not None for c in listed):
        by_ordinal = sorted(listed, key=lambda c: -(c.replica.ordinal or 0))[:count]
        return list(itertools.takewhile(lambda c: not c.protected, by_ordinal))
    return sorted((c for c in listed if not c.protected), key=lambda c: c.rank)[:count]


def removal_order(replicas: Iterable[ReplicaInfo]) -> list[ReplicaInfo]:
    """The order the workload's controller removes replicas in, as far as a drain cares.

    A StatefulSet: highest ordinal first, nothing else counts. A ReplicaSet
    (``ActivePodsWithRanks``): unassigned before assigned, Pending/Unknown before Running,
    not-ready before ready — and only then the deletion cost. Readiness beats cost: a pod
    that turns not-ready during a drain goes before the victims marked −2³¹.
    """
    listed = list(replicas)
    if any(r.ordinal is not None for r in listed):
        return sorted(listed, key=lambda r: -(r.ordinal or 0))
    return sorted(listed, key=lambda r: (r.scheduled, r.running, r.ready, r.deletion_cost or 0))


def rollout_owners(replicas: Iterable[ReplicaInfo]) -> list[str]:
    """The ReplicaSets owning the replicas, when there are two or more: a Deployment's
    rollout is in progress (or paused half-way), and Kubernetes splits a scale-down across
    them in proportion to their sizes, each ranking only its own pods."""
    owners = sorted({r.owner for r in replicas if r.owner and r.ordinal is None})
    return owners if len(owners) > 1 else []


def _told_to_drain(consumers: Iterable[tuple[str | None, ConsumerInfo]]) -> bool:
    return any(info.command is Command.DRAIN for _, info in consumers)


class Drainer:
    """Drain-then-scale-down for workloads whose spec says ``drain: true``."""

    def __init__(
        self,
        redis_for: RedisFor,
        metrics: ControllerMetrics,
        *,
        poll_interval_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.redis_for = redis_for
        self.metrics = metrics
        self.poll_interval_s = poll_interval_s
        self.clock = clock
        self.wall = wall  # epoch seconds, to compare with a replica's creation time
        self._protected_seen: dict[tuple[str, str], str] = {}  # last logged, per workload
        self._why: dict[tuple[str, str], str] = {}  # why the drain in flight ended, per workload

    async def _consumers(
        self, spec: ScalingSpec
    ) -> dict[str, list[tuple[str | None, ConsumerInfo]]]:
        """Registered consumers of the workload's queues, by pod name."""
        by_pod: dict[str, list[tuple[str | None, ConsumerInfo]]] = {}
        for trigger in spec.queue_triggers:  # list and stream consumers register alike
            redis = self.redis_for(trigger.redis_url)
            for queue in trigger.queues:
                for info in await read_registry(redis, queue):
                    by_pod.setdefault(info.pod or info.consumer_id, []).append(
                        (trigger.redis_url, info)
                    )
        return by_pod

    async def scale_down(
        self,
        target: Target,
        spec: ScalingSpec,
        current: int,
        desired: int,
        recheck: Callable[[], Awaitable[int | None]],
    ) -> int:
        ns, name = target.ref.namespace, target.ref.name
        replicas = await target.replicas()
        owners = rollout_owners(replicas)
        if owners and len(replicas) > desired:
            await self._hold(target, current, desired, owners)
            return current
        consumers = await self._consumers(spec)
        candidates = [Candidate(r, tuple(consumers.get(r.name, ()))) for r in replicas]
        wanted = max(0, len(replicas) - desired)
        victims = pick_victims(candidates, wanted)
        chosen = {v.replica.name for v in victims}
        await self._release(target, [c for c in candidates if c.replica.name not in chosen])
        if len(victims) < wanted:  # the others are protected: stop short, or wait
            desired += wanted - len(victims)
            self._log_protected(target, candidates, desired)
            if not victims or desired >= current:
                return current
        else:
            self._protected_seen.pop((ns, name), None)
        marked = [replace(r, deletion_cost=LOWEST_DELETION_COST) if r.name in chosen else r
                  for r in replicas]  # fmt: skip
        ahead = [r.name for r in removal_order(marked)[: len(victims)] if r.name not in chosen]
        if ahead:  # protected, yet not ready: the ReplicaSet would remove it before any victim
            log_event(logger, "scale-down held", namespace=ns, workload=name, current=current,
                      desired=desired, pods=",".join(ahead), reason=SCALE_DOWN_PROTECTED,
                      message="not-ready protected pods would be removed first")  # fmt: skip
            return current
        log_event(
            logger,
            "drain started",
            namespace=ns,
            workload=name,
            stage=DrainStage.REQUESTED,
            current=current,
            desired=desired,
            victims=",".join(v.replica.name for v in victims),
        )
        self.metrics.drains.labels(ns, name, DrainStage.REQUESTED).inc()
        now_set = current  # spec.replicas once the drain ends, if it writes nothing
        try:
            await self._mark(target, victims, Command.DRAIN)
            outcome = await self._wait(target, spec, victims, desired, recheck)
            if outcome is not DrainStage.CANCELLED:
                if outcome is DrainStage.ACKNOWLEDGED:
                    log_event(
                        logger, "drain acknowledged", namespace=ns, workload=name, stage=outcome
                    )
                # Kubernetes picks its victims when /scale is written: decide on what is
                # there now, not on what was there when the drain began.
                displaced = await self._displaced(target, spec, victims, desired)
                if displaced is not None:
                    outcome = self._cancelled(target, displaced)
                else:
                    try:
                        await target.scale(desired, expected=current)
                    except ReplicasChangedError as e:
                        outcome = self._cancelled(target, f"{e}: their value stands")
                        now_set = current if e.found is None else e.found
        except asyncio.CancelledError:
            # a stop or lost leadership
            self.metrics.drains.labels(ns, name, DrainStage.ABORTED).inc()
            await asyncio.shield(self._mark(target, victims, Command.RUN))
            raise
        except AutoscalerError:
            self.metrics.drains.labels(ns, name, DrainStage.ABORTED).inc()
            await self._restore(target, spec, victims)
            raise
        self.metrics.drains.labels(ns, name, outcome).inc()
        if outcome in _TOLD:
            await self._tell(target, outcome, self._why.pop((ns, name), ""))
        if outcome is DrainStage.CANCELLED:
            await self._restore(target, spec, victims)
            return now_set
        await self._verify(target, replicas, victims, desired)
        return desired

    async def _tell(self, target: Target, outcome: DrainStage, why: str) -> None:
        """An Event for the operator: the drain was cancelled or timed out, and why (the
        same text as the log line)."""
        reason, warning = _TOLD[outcome]
        try:
            await target.record_event(reason, why or str(outcome), warning=warning)
        except AutoscalerError as e:
            log_event(logger, "event failed", logging.WARNING, namespace=target.ref.namespace,
                      workload=target.ref.name, error=str(e))  # fmt: skip

    def _cancelled(self, target: Target, why: str, *, desired: int | None = None) -> DrainStage:
        """Log the cancellation; its Event says the same. ``desired``: the replicas the
        load wants now, when it rose during the drain."""
        told = why if desired is None else f"{why} ({desired} replicas wanted)"
        self._why[target.ref.namespace, target.ref.name] = f"drain cancelled: {told}"
        log_event(
            logger,
            "drain cancelled",
            namespace=target.ref.namespace,
            workload=target.ref.name,
            stage=DrainStage.CANCELLED,
            **({} if desired is None else {"desired": desired}),
            message=why,
        )
        return DrainStage.CANCELLED

    async def _displaced(
        self, target: Target, spec: ScalingSpec, victims: list[Candidate], desired: int
    ) -> str | None:
        """Why Kubernetes would now remove a replica that is not a drained victim, if it
        would: a rollout began, or a pod turned not-ready (readiness beats the deletion
        cost), was replaced or added — or a victim's consumer registered after the drain
        began and has not drained (a pod picked while its sidecar was still starting: it
        was told nothing, and takes messages as soon as it registers). The drain is then
        cancelled and retried on the next decision, which ranks what is there then;
        nothing holding messages is removed undrained."""
        consumers = await self._consumers(spec)
        late = sorted(v.replica.name for v in victims
                      if not _drained(_untold(v, consumers.get(v.replica.name, []))))  # fmt: skip
        if late:
            return f"the consumers of {', '.join(late)} registered during the drain, not drained"
        fresh = await target.replicas()
        owners = rollout_owners(fresh)
        if owners:
            return f"a rollout began during the drain (ReplicaSets {', '.join(owners)})"
        names = {v.replica.name for v in victims}
        removed = removal_order(fresh)[: max(0, len(fresh) - desired)]
        outsiders = [r.name for r in removed if r.name not in names]
        if outsiders:
            return (
                f"Kubernetes would now remove {', '.join(outsiders)}, not drained "
                "(not ready, not running, or new since the drain began)"
            )
        return None

    async def _hold(self, target: Target, current: int, desired: int, owners: list[str]) -> None:
        """A scale-down while a Deployment has pods of two ReplicaSets waits: Kubernetes
        would split it across them (``deployment/sync.go`` ``scale()``), each ReplicaSet
        ranking only its own pods, so the drain cannot choose the pods it removes. Held
        until one ReplicaSet is left — a rollout in progress settles by itself, a paused
        one when resumed. Said in a log line and a (repeating) Event every decision."""
        ns, name = target.ref.namespace, target.ref.name
        log_event(logger, "scale-down held", namespace=ns, workload=name, current=current,
                  desired=desired, replica_sets=",".join(owners),
                  reason="rollout in progress")  # fmt: skip
        message = (
            f"scale-down held: a rollout is in progress (pods of ReplicaSets "
            f"{', '.join(owners)}); it resumes once one ReplicaSet is left"
        )
        try:
            await target.record_event("ScaleDownHeld", message)
        except AutoscalerError as e:
            log_event(logger, "event failed", logging.WARNING, namespace=ns, workload=name,
                      error=str(e))  # fmt: skip

    def _log_protected(self, target: Target, candidates: list[Candidate], desired: int) -> None:
        """One line per change of the protected set (not per cycle while it lasts)."""
        ref = (target.ref.namespace, target.ref.name)
        protected = ",".join(sorted(c.replica.name for c in candidates if c.protected))
        if self._protected_seen.get(ref) == f"{protected} {desired}":
            return
        self._protected_seen[ref] = f"{protected} {desired}"
        log_event(logger, "scale-down protected", namespace=ref[0], workload=ref[1],
                  reason=SCALE_DOWN_PROTECTED, desired=desired, protected=protected,
                  message="replicas under scale-in protection are not removed")  # fmt: skip

    async def _restore(self, target: Target, spec: ScalingSpec, victims: list[Candidate]) -> None:
        """Put the victims of an ended drain back to work, retrying every polling interval
        until it succeeds: while Redis (or the API) is away they would sit drained with a
        backlog waiting. More than one attempt is reported (metric stage
        ``restore_retried``, Event ``DrainRestoreRetried``)."""
        attempts = 0
        while True:
            attempts += 1
            try:
                await self._mark(target, victims, Command.RUN)
                break
            except AutoscalerError as e:
                log_event(logger, "drain restore failed", logging.WARNING,
                          namespace=target.ref.namespace, workload=target.ref.name,
                          attempt=attempts, error=str(e))  # fmt: skip
                await asyncio.sleep(spec.polling_interval_s)
        if attempts > 1:
            ns, name = target.ref.namespace, target.ref.name
            self.metrics.drains.labels(ns, name, DrainStage.RESTORE_RETRIED).inc()
            message = f"restored {len(victims)} drained replicas after {attempts} attempts"
            log_event(logger, "drain restored", namespace=ns, workload=name, attempts=attempts)
            try:
                await target.record_event("DrainRestoreRetried", message, warning=True)
            except AutoscalerError as e:
                log_event(logger, "event failed", logging.WARNING, namespace=ns,
                          workload=name, error=str(e))  # fmt: skip

    async def stale_queues(self, url: str | None, queues: Sequence[str]) -> set[str]:
        """Which of ``queues`` (all on the server ``url``) have a consumer told to drain:
        one round trip for them all (``redisqueue.told_to_drain``). A controller that
        starts leading asks this for every workload at once, then calls ``release_stale``
        for the few that have any; usually none."""
        return {queue for queue, _ in await told_to_drain(self.redis_for(url), queues)}

    async def release_stale(self, target: Target, spec: ScalingSpec) -> int:
        """Put back to work the consumers an unfinished drain left draining.

        Only a controller that died mid-drain leaves them (a stop, an error or lost
        leadership restores its victims): they idle, holding no message, until a later
        scale-down picks them first. Called by a controller that starts leading, for the
        workloads ``stale_queues`` names (and before a drain that comes first). Lists the
        replicas only when the registry shows a drain command: one Redis read per queue
        otherwise.
        """
        consumers = await self._consumers(spec)
        if not any(map(_told_to_drain, consumers.values())):
            return 0
        replicas = await target.replicas()
        return await self._release(
            target, [Candidate(r, tuple(consumers.get(r.name, ()))) for r in replicas]
        )

    async def _release(self, target: Target, candidates: list[Candidate]) -> int:
        stale = [c for c in candidates if _told_to_drain(c.consumers)]
        if stale:
            log_event(
                logger,
                "stale drain released",
                namespace=target.ref.namespace,
                workload=target.ref.name,
                pods=",".join(c.replica.name for c in stale),
            )
            await self._mark(target, stale, Command.RUN)
        return len(stale)

    async def _mark(self, target: Target, victims: list[Candidate], command: Command) -> None:
        """Tell the victims' consumers ``command``; give a victim the lowest deletion cost
        (``DRAIN``), or put back the cost it had before (``RUN``: the user's own value, or
        none). A StatefulSet's pods get none: it removes by ordinal. A pod already gone is
        skipped by the target (404): the others are still marked."""
        for victim in victims:
            for url, info in victim.consumers:
                await set_command(self.redis_for(url), info.consumer_id, command, info.queue or "")
            replica = victim.replica
            if replica.ordinal is not None:
                continue
            if command is Command.DRAIN:
                cost: int | None = LOWEST_DELETION_COST
            else:  # a stale drain's victim still shows our mark: nothing else to restore
                previous = replica.deletion_cost
                cost = None if previous == LOWEST_DELETION_COST else previous
            await target.set_deletion_cost(replica.name, cost)

    async def _wait(
        self,
        target: Target,
        spec: ScalingSpec,
        victims: list[Candidate],
        desired: int,
        recheck: Callable[[], Awaitable[int | None]],
    ) -> DrainStage:
        """Poll until every victim is drained; returns the outcome: acknowledged, timed
        out or cancelled."""
        started = self.clock()
        next_recheck = started + spec.polling_interval_s
        pending = {v.replica.name for v in victims if v.consumers}
        starting = self._starting(victims)
        while pending or starting:
            now = self.clock()
            if now - started >= spec.drain_timeout_s:
                self._why[target.ref.namespace, target.ref.name] = (
                    f"drain timed out after {spec.drain_timeout_s:g}s waiting for "
                    f"{', '.join(sorted(pending | starting))}; their unfinished messages go "
                    "back to the queue"
                )
                log_event(
                    logger,
                    "drain timed out",
                    logging.WARNING,
                    namespace=target.ref.namespace,
                    workload=target.ref.name,
                    stage=DrainStage.TIMED_OUT,
                    pending=",".join(sorted(pending | starting)),
                )
                return DrainStage.TIMED_OUT
            if now >= next_recheck:
                next_recheck = now + spec.polling_interval_s
                wanted = await recheck()
                if wanted is not None and wanted > desired:
                    return self._cancelled(target, "load rose during the drain", desired=wanted)
            await asyncio.sleep(self.poll_interval_s)
            consumers = await self._consumers(spec)
            late = await self._tell_late(target, victims, starting, consumers)
            starting = (starting - late) & self._starting(victims)  # past its grace: not waited
            pending = {p for p in pending | late if not _drained(consumers.get(p, []))}
        return DrainStage.ACKNOWLEDGED

    def _starting(self, victims: list[Candidate]) -> set[str]:
        """Victims whose sidecar is taken to be starting: running, no consumer registered
        yet, created less than ``REGISTRATION_GRACE_S`` ago. They hold nothing — which
        made them the cheapest victims — but once registered they take messages: the drain
        waits for them to register (then tells them to drain) instead of letting them be
        removed in the middle of their first message. An older replica that never
        registered (not a consumer at all, or its sidecar is failing) is not waited for."""
        young = self.wall() - REGISTRATION_GRACE_S
        return {
            v.replica.name
            for v in victims
            if not v.consumers
            and v.replica.scheduled
            and v.replica.running
            and v.replica.created_at > young
        }

    async def _tell_late(
        self,
        target: Target,
        victims: list[Candidate],
        starting: set[str],
        consumers: dict[str, list[tuple[str | None, ConsumerInfo]]],
    ) -> set[str]:
        """Victims picked before their consumer registered (``_starting``) whose consumer
        has registered since: told to drain too, and kept in ``victims`` with their
        consumers so that a cancelled drain puts them back to work. Returns their names."""
        late = {name for name in starting if consumers.get(name)}
        for i, victim in enumerate(victims):
            name = victim.replica.name
            if name in late:
                victims[i] = replace(victim, consumers=tuple(consumers[name]))
                for url, info in consumers[name]:
                    await set_command(self.redis_for(url), info.consumer_id, Command.DRAIN,
                                      info.queue or "")  # fmt: skip
        if late:
            log_event(logger, "drain told late", namespace=target.ref.namespace,
                      workload=target.ref.name, pods=",".join(sorted(late)),
                      message="consumers registered after the drain began")  # fmt: skip
        return late

    async def _verify(
        self, target: Target, before: list[ReplicaInfo], victims: list[Candidate], desired: int
    ) -> None:
        """After the scale-down: were the removed replicas the drained ones?

        Waits until the count is reached, or ``SETTLE_TIMEOUT_S`` without a replica going
        away: a StatefulSet (OrderedReady) removes one pod at a time, each after the last
        has exited, which can take longer than the timeout in all."""
        names = {v.replica.name for v in victims}
        deadline = self.clock() + SETTLE_TIMEOUT_S
        remaining = {r.name for r in await target.replicas()}
        while len(remaining & {r.name for r in before}) > desired and self.clock() < deadline:
            await asyncio.sleep(self.poll_interval_s)
            left = {r.name for r in await target.replicas()}
            if len(left) < len(remaining):
                deadline = self.clock() + SETTLE_TIMEOUT_S
            remaining = left
        wrong = sorted(r.name for r in before if r.name not in remaining and r.name not in names)
        survivors = [v for v in victims if v.replica.name in remaining]
        if survivors:  # the ReplicaSet kept a drained victim: put it back to work
            await self._mark(target, survivors, Command.RUN)
        if wrong:
            ns, name = target.ref.namespace, target.ref.name
            self.metrics.undrained_removals.labels(ns, name).inc(len(wrong))
            message = (
                f"removed {', '.join(wrong)}, which were not drained (deletion cost is best effort)"
            )
            log_event(
                logger,
                "undrained removal",
                logging.WARNING,
                namespace=ns,
                workload=name,
                pods=",".join(wrong),
            )
            await target.record_event("UndrainedPodRemoved", message, warning=True)


def _untold(
    victim: Candidate, entries: list[tuple[str | None, ConsumerInfo]]
) -> list[tuple[str | None, ConsumerInfo]]:
    """The victim's consumers the drain has not told to drain: registered since."""
    told = {info.consumer_id for _, info in victim.consumers}
    return [(url, info) for url, info in entries if info.consumer_id not in told]


def _drained(entries: list[tuple[str | None, ConsumerInfo]]) -> bool:
    """Every consumer of a replica has acknowledged (or is gone: the reaper takes over)."""
    return all(info.state is ConsumerState.DRAINED or not info.lease_alive for _, info in entries)


class Reaper:
    """Returns the messages of dead consumers to their queues."""

    def __init__(self, redis_for: RedisFor, metrics: ControllerMetrics) -> None:
        self.redis_for = redis_for
        self.metrics = metrics

    async def reap(self, url: str | None, queues: Iterable[str]) -> int:
        """One pass over ``queues`` of one server; returns the messages requeued.

        One round trip finds the dead consumers of every queue (``dead_consumers``, a
        script that returns only those): the pass over 10,000 healthy queues costs a few
        ms of CPU where a registry read per queue cost 0.8-2.4 s (bench/bench_reaper.py).
        Then one requeue script per dead consumer, which is rare."""
        redis = self.redis_for(url)
        total = 0
        for info in await dead_consumers(redis, list(queues)):
            queue = info.queue
            keys = ConsumerKeys(queue, info.consumer_id, info.dead_letter or "")
            result = await requeue(
                redis,
                keys,
                max_deliveries=info.max_deliveries or DEFAULT_MAX_DELIVERIES,
                reason="consumer died holding it too often",
                forget=True,
            )
            returned = result.requeued + result.quarantined  # quarantined: see keys
            if returned or result.dead_lettered:
                log_event(
                    logger,
                    "reaped",
                    queue=queue,
                    consumer=info.consumer_id,
                    requeued=returned,
                    quarantined=result.quarantined,
                    dead_lettered=result.dead_lettered,
                )
            self.metrics.reaped_messages.labels(queue).inc(returned)
            self.metrics.dead_lettered.labels(queue).inc(result.dead_lettered)
            total += returned
        return total
