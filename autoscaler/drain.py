"""The scale-down protocol and the reaper: no message lost when replicas go away.

Drain (N → M < N), written against the ``Target`` protocol and the registry in Redis:

1. pick N−M *victims*: replicas not scheduled, then not ready, then without a live
   registered consumer, then idle, then fewest in flight, then newest;
2. ask each victim's consumer to drain (registry ``command = drain``) and give the
   victim the lowest ``controller.kubernetes.io/pod-deletion-cost``, so the ReplicaSet
   removes exactly these pods;
3. wait until every victim's consumer reports ``drained`` (or its lease died, or
   ``drain-timeout`` passed — its sidecar pushes back what it still holds on SIGTERM);
   meanwhile re-decide every polling interval: if the load rose so that fewer victims
   are wanted, cancel — victims go back to ``running`` and their cost is restored;
4. write M; then check which replicas went away and report (Event + metric) any that
   was not a drained victim (the deletion cost is best effort).

The reaper returns the processing lists of consumers whose lease expired to the head of
their queue (``redisqueue.requeue``, atomic and safe with two controllers); messages
already delivered ``max-deliveries`` times go to the dead-letter list instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from redis.asyncio import Redis

from autoscaler.errors import AutoscalerError
from autoscaler.keys import Command, ConsumerState
from autoscaler.logs import log_event
from autoscaler.metrics import ControllerMetrics
from autoscaler.policy import ScalingSpec
from autoscaler.redisqueue import ConsumerInfo, ConsumerKeys, read_registry, requeue, set_command
from autoscaler.targets import ReplicaInfo, Target

logger = logging.getLogger(__name__)

LOWEST_DELETION_COST = -(2**31)  # int32 minimum: removed before any other pod
DEFAULT_MAX_DELIVERIES = 5
SETTLE_TIMEOUT_S = 30.0  # how long to watch the replicas go away after the scale-down

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


def pick_victims(candidates: Iterable[Candidate], count: int) -> list[Candidate]:
    """The ``count`` replicas cheapest to remove (see the module docstring for the order)."""
    return sorted(candidates, key=lambda c: c.rank)[:count]


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
    ) -> None:
        self.redis_for = redis_for
        self.metrics = metrics
        self.poll_interval_s = poll_interval_s
        self.clock = clock

    async def _consumers(
        self, spec: ScalingSpec
    ) -> dict[str, list[tuple[str | None, ConsumerInfo]]]:
        """Registered consumers of the workload's queues, by pod name."""
        by_pod: dict[str, list[tuple[str | None, ConsumerInfo]]] = {}
        for trigger in spec.redis_triggers:
            redis = self.redis_for(trigger.redis_url)
            for queue in trigger.lists:
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
        consumers = await self._consumers(spec)
        candidates = [Candidate(r, tuple(consumers.get(r.name, ()))) for r in replicas]
        victims = pick_victims(candidates, max(0, len(replicas) - desired))
        chosen = {v.replica.name for v in victims}
        await self._release(target, [c for c in candidates if c.replica.name not in chosen])
        log_event(
            logger,
            "drain started",
            namespace=ns,
            workload=name,
            stage="requested",
            current=current,
            desired=desired,
            victims=",".join(v.replica.name for v in victims),
        )
        self.metrics.drains.labels(ns, name, "requested").inc()
        try:
            await self._mark(target, victims, Command.DRAIN, LOWEST_DELETION_COST)
            outcome = await self._wait(target, spec, victims, desired, recheck)
        except asyncio.CancelledError:
            self.metrics.drains.labels(ns, name, "aborted").inc()  # a stop or lost leadership
            await asyncio.shield(self._mark(target, victims, Command.RUN, None))
            raise
        except AutoscalerError:
            self.metrics.drains.labels(ns, name, "aborted").inc()
            await self._mark(target, victims, Command.RUN, None)
            raise
        self.metrics.drains.labels(ns, name, outcome).inc()
        if outcome == "acknowledged":
            log_event(logger, "drain acknowledged", namespace=ns, workload=name, stage=outcome)
        if outcome == "cancelled":
            await self._mark(target, victims, Command.RUN, None)
            return current
        await target.scale(desired)
        await self._verify(target, replicas, victims, desired)
        return desired

    async def release_stale(self, target: Target, spec: ScalingSpec) -> int:
        """Put back to work the consumers an unfinished drain left draining.

        Only a controller that died mid-drain leaves them (a stop, an error or lost
        leadership restores its victims): they idle, holding no message, until a later
        scale-down picks them first. Called when a controller starts leading and before
        a scale-up, which wants them back. Lists the replicas only when the registry
        shows a drain command: one Redis read per queue otherwise.
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
            await self._mark(target, stale, Command.RUN, None)
        return len(stale)

    async def _mark(
        self, target: Target, victims: list[Candidate], command: Command, cost: int | None
    ) -> None:
        for victim in victims:
            for url, info in victim.consumers:
                await set_command(self.redis_for(url), info.consumer_id, command)
            await target.set_deletion_cost(victim.replica.name, cost)

    async def _wait(
        self,
        target: Target,
        spec: ScalingSpec,
        victims: list[Candidate],
        desired: int,
        recheck: Callable[[], Awaitable[int | None]],
    ) -> str:
        """Poll until every victim is drained; returns acknowledged/timed_out/cancelled."""
        started = self.clock()
        next_recheck = started + spec.polling_interval_s
        pending = {v.replica.name for v in victims if v.consumers}
        while pending:
            now = self.clock()
            if now - started >= spec.drain_timeout_s:
                log_event(
                    logger,
                    "drain timed out",
                    logging.WARNING,
                    namespace=target.ref.namespace,
                    workload=target.ref.name,
                    stage="timed_out",
                    pending=",".join(sorted(pending)),
                )
                return "timed_out"
            if now >= next_recheck:
                next_recheck = now + spec.polling_interval_s
                wanted = await recheck()
                if wanted is not None and wanted > desired:
                    log_event(
                        logger,
                        "drain cancelled",
                        namespace=target.ref.namespace,
                        workload=target.ref.name,
                        stage="cancelled",
                        desired=wanted,
                        message="load rose during the drain",
                    )
                    return "cancelled"
            await asyncio.sleep(self.poll_interval_s)
            consumers = await self._consumers(spec)
            pending = {p for p in pending if not _drained(consumers.get(p, []))}
        return "acknowledged"

    async def _verify(
        self, target: Target, before: list[ReplicaInfo], victims: list[Candidate], desired: int
    ) -> None:
        """After the scale-down: were the removed replicas the drained ones?"""
        names = {v.replica.name for v in victims}
        deadline = self.clock() + SETTLE_TIMEOUT_S
        remaining = {r.name for r in await target.replicas()}
        while len(remaining & {r.name for r in before}) > desired and self.clock() < deadline:
            await asyncio.sleep(self.poll_interval_s)
            remaining = {r.name for r in await target.replicas()}
        wrong = sorted(r.name for r in before if r.name not in remaining and r.name not in names)
        survivors = [v for v in victims if v.replica.name in remaining]
        if survivors:  # the ReplicaSet kept a drained victim: put it back to work
            await self._mark(target, survivors, Command.RUN, None)
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


def _drained(entries: list[tuple[str | None, ConsumerInfo]]) -> bool:
    """Every consumer of a replica has acknowledged (or is gone: the reaper takes over)."""
    return all(info.state is ConsumerState.DRAINED or not info.lease_alive for _, info in entries)


class Reaper:
    """Returns the messages of dead consumers to their queues."""

    def __init__(self, redis_for: RedisFor, metrics: ControllerMetrics) -> None:
        self.redis_for = redis_for
        self.metrics = metrics

    async def reap(self, url: str | None, queues: Iterable[str]) -> int:
        """One pass over ``queues`` of one server; returns the messages requeued."""
        redis = self.redis_for(url)
        total = 0
        for queue in queues:
            for info in await read_registry(redis, queue):
                if info.lease_alive:
                    continue
                keys = ConsumerKeys(queue, info.consumer_id, info.dead_letter or "")
                result = await requeue(
                    redis,
                    keys,
                    max_deliveries=info.max_deliveries or DEFAULT_MAX_DELIVERIES,
                    reason="consumer died holding it too often",
                    forget=True,
                )
                if result.requeued or result.dead_lettered:
                    log_event(
                        logger,
                        "reaped",
                        queue=queue,
                        consumer=info.consumer_id,
                        requeued=result.requeued,
                        dead_lettered=result.dead_lettered,
                    )
                self.metrics.reaped_messages.labels(queue).inc(result.requeued)
                self.metrics.dead_lettered.labels(queue).inc(result.dead_lettered)
                total += result.requeued
        return total
