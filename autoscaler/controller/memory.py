"""Redis memory pressure: how full each queue's Redis is, read every few cycles, not each one.

``MemoryWatch.run`` wakes every ``interval_s`` (default 15 s: three default polling
intervals) and, per Redis server used by a list trigger:

- reads ``INFO memory`` (one round trip) where a workload has ``redis-memory-high``; the
  ratio ``used_memory/maxmemory`` is kept in ``ratios`` and ``annotate`` copies it into
  those triggers' readings, where the pure policy applies the watermarks (hysteresis in
  its state). The ratio is rounded to 0.1 %: a reading that did not change in substance
  leaves a steady workload steady;
- on the first round and every ``durability_every`` rounds (default 20: five minutes),
  reads the server's persistence and eviction settings (``redisqueue.read_durability``,
  as the sidecar does at start).

Risks, per workload, each told once per change with a Warning Event ``RedisMemoryRisk``
(and the log line), and as ``queue_autoscaler_redis_memory_risk{risk}``:
``no_maxmemory`` — watermarks set but ``maxmemory 0``, so there is no ratio and no
pressure is ever seen (Redis grows until the machine's OOM killer stops it);
``eviction`` — an eviction ``maxmemory-policy``: under pressure Redis silently deletes
keys, queues included (``noeviction`` rejects pushes with OOM instead, which producers
see). A server that cannot be read keeps no ratio: the watermarks hold no opinion.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence

from redis.asyncio import Redis

from autoscaler.errors import AutoscalerError
from autoscaler.logs import log_event
from autoscaler.metrics import MEMORY_RISKS, ControllerMetrics
from autoscaler.policy import Reading, RedisTrigger, Trigger
from autoscaler.redisqueue import read_durability, read_memory
from autoscaler.workload import WorkloadRef

from .workload import Workload

logger = logging.getLogger(__name__)

Record = Callable[[Workload, str, str], None]  # (workload, Event reason, message): a Warning


class MemoryWatch:
    """Memory ratios and risks of the queues' Redis servers; see the module docstring."""

    def __init__(
        self,
        redis_for: Callable[[str | None], Redis],
        metrics: ControllerMetrics,
        *,
        interval_s: float = 15.0,
        durability_every: int = 20,
    ) -> None:
        self.redis_for = redis_for
        self.metrics = metrics
        self.interval_s = interval_s
        self.durability_every = durability_every
        self.ratios: dict[str | None, float] = {}  # by trigger redis_url (None: the default)
        self._eviction: dict[str | None, str | None] = {}  # the policy, when it evicts
        self._risks: dict[WorkloadRef, frozenset[str]] = {}
        self._rounds = 0

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

    async def run(
        self,
        workloads: Callable[[], Iterable[Workload]],
        record: Record,
        is_leader: Callable[[], bool],
    ) -> None:
        """Check every ``interval_s`` while leading, until cancelled."""
        while True:
            if is_leader():
                await self.check(list(workloads()), record)
            await asyncio.sleep(self.interval_s)

    async def check(self, workloads: list[Workload], record: Record) -> None:
        """One round: read the servers, update ratios, metrics and risks."""
        durability_round = self._rounds % self.durability_every == 0
        self._rounds += 1
        by_server: dict[str | None, list[tuple[Workload, RedisTrigger]]] = {}
        for w in workloads:
            for trigger in w.spec.redis_triggers if w.spec is not None else ():
                by_server.setdefault(trigger.redis_url, []).append((w, trigger))
        for url in set(self.ratios) - set(by_server):
            del self.ratios[url]
        present = {w.ref for w in workloads}
        self._risks = {ref: r for ref, r in self._risks.items() if ref in present}
        for url, members in by_server.items():
            watched = {id(w) for w, t in members if t.memory_high is not None}
            try:
                if durability_round:
                    durability = await read_durability(self.redis_for(url))
                    evicting = durability.eviction
                    self._eviction[url] = durability.maxmemory_policy if evicting else None
                maxmemory = await self._read_ratio(url) if watched else None
            except AutoscalerError as e:
                self.ratios.pop(url, None)
                log_event(logger, "redis memory read failed", logging.WARNING, error=str(e))
                continue
            for w, _ in members:
                risks = set()
                if self._eviction.get(url) is not None:
                    risks.add("eviction")
                if id(w) in watched and maxmemory == 0:
                    risks.add("no_maxmemory")
                self._report(w, frozenset(risks), self._eviction.get(url), record)

    async def _read_ratio(self, url: str | None) -> int:
        """Read ``INFO memory`` into ``ratios``; returns maxmemory (0: no limit)."""
        memory = await read_memory(self.redis_for(url))
        ratio = memory.ratio
        if ratio is None:
            self.ratios.pop(url, None)
        else:
            self.ratios[url] = round(ratio, 3)
        return memory.maxmemory_bytes

    def _report(
        self, w: Workload, risks: frozenset[str], policy: str | None, record: Record
    ) -> None:
        ns, name = w.ref.namespace, w.ref.name
        spec = w.spec
        watched = spec is not None and any(t.memory_high is not None for t in spec.redis_triggers)
        if watched and spec is not None:
            url = next(t.redis_url for t in spec.redis_triggers if t.memory_high is not None)
            ratio = self.ratios.get(url)
            if ratio is not None:
                self.metrics.redis_memory_ratio.labels(ns, name).set(ratio)
        for risk in MEMORY_RISKS:
            self.metrics.redis_memory_risk.labels(ns, name, risk).set(risk in risks)
        before = self._risks.get(w.ref, frozenset())
        self._risks[w.ref] = risks
        for risk in sorted(risks - before):
            record(w, "RedisMemoryRisk", _MESSAGES[risk].format(policy=policy))


_MESSAGES = {
    "no_maxmemory": "the queue's Redis has maxmemory 0 (no limit): redis-memory-high has no "
    "ratio to compare and never fires; set maxmemory (and maxmemory-policy noeviction)",
    "eviction": "the queue's Redis has maxmemory-policy {policy}: under memory pressure it "
    "deletes keys, queues included, silently; use noeviction",
}
