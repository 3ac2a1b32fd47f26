"""Can a queue's Redis lose what it was given? The controller's warning, per workload.

At-least-once delivery holds only while Redis keeps the lists. ``DurabilityWatch`` reads
each queue server's persistence and eviction settings (``redisqueue.read_durability``,
the same reading as the sidecar's at start) when the controller starts leading and then
every ``interval_s`` (default 300 s: the settings change by hand, rarely), and reports
per workload, by risk (``durability_risks``):

``no_persistence``
    neither AOF nor RDB is on: a Redis restart loses every queued and held message;
``eviction``
    ``maxmemory-policy`` is ``allkeys-*`` or ``volatile-*``: under memory pressure Redis
    may delete queue keys.

Each risk is told once per change — a Warning Event ``RedisDurabilityRisk`` on the
workload and one log line — and is the gauge
``queue_autoscaler_redis_durability_risk{risk}`` (1 while present). A server that cannot
be read, or will not say (a managed Redis that forbids ``CONFIG``), keeps its last risks:
unknown is never reported as a risk, nor as its absence.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

from redis.asyncio import Redis

from autoscaler.errors import AutoscalerError
from autoscaler.logs import log_event
from autoscaler.metrics import DURABILITY_RISKS, ControllerMetrics
from autoscaler.redisqueue import Durability, read_durability
from autoscaler.workload import WorkloadRef

from .periodic import Record, ServerWatch, by_server
from .workload import Workload

logger = logging.getLogger(__name__)

EVENT_REASON = "RedisDurabilityRisk"


def durability_risks(durability: Durability) -> dict[str, str]:
    """The risks ``durability`` shows, each with the operator's message."""
    messages = {
        "no_persistence": "the queue's Redis has neither AOF nor RDB persistence: a restart "
        "loses every queued and held message (set appendonly yes)",
        "eviction": f"the queue's Redis has maxmemory-policy {durability.maxmemory_policy}: "
        "under memory pressure it may delete queue keys (use noeviction)",
    }
    return {risk: messages[risk] for risk, on in durability.risks().items() if on}


class DurabilityWatch(ServerWatch):
    """Durability risks of the queues' Redis servers; see the module docstring."""

    def __init__(
        self,
        redis_for: Callable[[str | None], Redis],
        metrics: ControllerMetrics,
        *,
        interval_s: float = 300.0,
    ) -> None:
        super().__init__(redis_for, metrics, interval_s=interval_s)
        self.risks: dict[WorkloadRef, frozenset[str]] = {}  # last told, per workload

    async def check(self, workloads: list[Workload], record: Record) -> None:
        """One round: one reading per server, then each workload's metric and Events."""
        servers = by_server(workloads, lambda w: w.spec.redis_triggers if w.spec else ())
        present = {w.ref for w in workloads}
        self.risks = {ref: r for ref, r in self.risks.items() if ref in present}
        for url, members in servers.items():
            try:
                found = durability_risks(await read_durability(self.redis_for(url)))
            except AutoscalerError as e:
                log_event(logger, "redis durability read failed", logging.WARNING, error=str(e))
                continue
            await self.each(members, functools.partial(self._report, found=found, record=record))

    def _report(self, w: Workload, found: dict[str, str], record: Record) -> None:
        ns, name = w.ref.namespace, w.ref.name
        for risk in DURABILITY_RISKS:
            self.metrics.redis_durability_risk.labels(ns, name, risk).set(risk in found)
        before = self.risks.get(w.ref, frozenset())
        self.risks[w.ref] = frozenset(found)
        for risk in sorted(set(found) - before):
            log_event(logger, "redis durability risk", logging.WARNING, namespace=ns,
                      workload=name, risk=risk, error=found[risk])  # fmt: skip
            record(w, EVENT_REASON, found[risk])
