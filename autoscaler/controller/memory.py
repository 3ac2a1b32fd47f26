"""Redis memory pressure: how full each queue's Redis is, read every few cycles, not each one.

``MemoryWatch.run`` wakes every ``interval_s`` (default 15 s: three default polling
intervals) while leading and reads ``INFO memory`` (one round trip,
``redisqueue.read_memory``) of each Redis server whose list triggers set
``redis-memory-high``. The ratio ``used_memory/maxmemory`` is kept in ``ratios`` and
``annotate`` copies it into those triggers' readings, where the pure policy applies the
watermarks (the hysteresis is in its state). The ratio is rounded to 0.1 %: a reading that
did not change in substance leaves a steady workload steady. A server that cannot be read
has no ratio: the watermarks hold no opinion meanwhile.

A server with ``maxmemory 0`` has no limit to compare with (it grows until the machine's
OOM killer stops it), so its watermarks could never fire: a Warning Event
``RedisMemoryRisk`` (once per change, with the log line) and
``queue_autoscaler_redis_maxmemory_unset`` say so. An eviction ``maxmemory-policy`` is
``controller.durability``'s warning, not repeated here.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence

from redis.asyncio import Redis

from autoscaler.errors import AutoscalerError
from autoscaler.logs import log_event
from autoscaler.metrics import ControllerMetrics
from autoscaler.policy import Reading, RedisTrigger, Trigger
from autoscaler.redisqueue import read_memory
from autoscaler.workload import WorkloadRef

from .periodic import Record, ServerWatch, by_server
from .workload import Workload

logger = logging.getLogger(__name__)

EVENT_REASON = "RedisMemoryRisk"
NO_MAXMEMORY = (
    "the queue's Redis has maxmemory 0 (no limit): redis-memory-high has no ratio to compare "
    "and never fires; set maxmemory (with maxmemory-policy noeviction)"
)


def _watched(w: Workload) -> list[RedisTrigger]:
    return [t for t in (w.spec.redis_triggers if w.spec else ()) if t.memory_high is not None]


class MemoryWatch(ServerWatch):
    """Memory ratios of the queues' Redis servers; see the module docstring."""

    def __init__(
        self,
        redis_for: Callable[[str | None], Redis],
        metrics: ControllerMetrics,
        *,
        interval_s: float = 15.0,
    ) -> None:
        super().__init__(redis_for, metrics, interval_s=interval_s)
        self.ratios: dict[str | None, float] = {}  # by trigger redis_url (None: the default)
        self._unlimited: set[WorkloadRef] = set()  # told: maxmemory 0

    def annotate(self, triggers: Sequence[Trigger], readings: list[Reading]) -> list[Reading]:
        """``readings`` with the known ratio on each watched trigger's reading (a copy only
        when one changes)."""
        out = readings
        ratios = self.ratios
        for i, trigger in enumerate(triggers):
            if type(trigger) is not RedisTrigger or trigger.memory_high is None:
                continue
            ratio = ratios.get(trigger.redis_url)
            reading = readings[i]
            if reading.memory_ratio != ratio:
                if out is readings:
                    out = list(readings)
                out[i] = reading._replace(memory_ratio=ratio)
        return out

    async def check(self, workloads: list[Workload], record: Record) -> None:
        """One round: one ``INFO memory`` per watched server, then ratios, metrics, Events."""
        servers = by_server(workloads, _watched)
        for url in set(self.ratios) - set(servers):
            del self.ratios[url]
        self._unlimited &= {w.ref for w in workloads}
        for url, members in servers.items():
            try:
                memory = await read_memory(self.redis_for(url))
            except AutoscalerError as e:
                self.ratios.pop(url, None)
                log_event(logger, "redis memory read failed", logging.WARNING, error=str(e))
                continue
            ratio = memory.ratio
            if ratio is None:
                self.ratios.pop(url, None)
            else:
                self.ratios[url] = round(ratio, 3)
            await self.each(members, functools.partial(self._report, ratio=ratio, record=record))

    def _report(self, w: Workload, ratio: float | None, record: Record) -> None:
        ns, name = w.ref.namespace, w.ref.name
        if ratio is not None:
            self.metrics.redis_memory_ratio.labels(ns, name).set(ratio)
        self.metrics.redis_maxmemory_unset.labels(ns, name).set(ratio is None)
        if ratio is None and w.ref not in self._unlimited:
            self._unlimited.add(w.ref)
            log_event(logger, "redis memory risk", logging.WARNING, namespace=ns,
                      workload=name, risk="no_maxmemory", error=NO_MAXMEMORY)  # fmt: skip
            record(w, EVENT_REASON, NO_MAXMEMORY)
        elif ratio is not None:
            self._unlimited.discard(w.ref)
