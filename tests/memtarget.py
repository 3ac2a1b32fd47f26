"""An in-memory ``Target`` for loop tests that don't need Kubernetes (our protocol's double)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from autoscaler.errors import ReplicasChangedError
from autoscaler.workload import ReplicaInfo, WorkloadRef

_clock = itertools.count(1)


@dataclass
class MemoryTarget:
    ref: WorkloadRef
    replica_count: int = 0
    pods: list[ReplicaInfo] = field(default_factory=list)
    costs: dict[str, int | None] = field(default_factory=dict)
    events: list[tuple[str, str, bool]] = field(default_factory=list)
    statuses: list[Mapping[str, object]] = field(default_factory=list)
    scales: list[int] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    on_scale: Callable[[int], None] = lambda replicas: None  # a test's observer

    async def scale(self, replicas: int, *, expected: int | None = None) -> None:
        if expected is not None and expected != self.replica_count:
            raise ReplicasChangedError(f"replicas are {self.replica_count}", self.replica_count)
        self.scales.append(replicas)
        self.on_scale(replicas)
        self.replica_count = replicas
        while len(self.pods) < replicas:
            n = next(_clock)
            self.pods.append(ReplicaInfo(f"{self.ref.name}-{n}", True, float(n)))
        # remove lowest cost first, then newest (as a ReplicaSet does)
        while len(self.pods) > replicas:
            victim = min(self.pods, key=lambda p: (self.costs.get(p.name) or 0, -p.created_at))
            self.pods.remove(victim)
        self.changed.set()

    async def replicas(self) -> list[ReplicaInfo]:
        """The pods, with the deletion costs set since (as a pod list shows them)."""
        return [
            replace(p, deletion_cost=self.costs[p.name]) if p.name in self.costs else p
            for p in self.pods
        ]

    async def set_deletion_cost(self, name: str, cost: int | None) -> None:
        self.costs[name] = cost

    async def record_event(self, reason: str, message: str, *, warning: bool = False) -> None:
        self.events.append((reason, message, warning))
        self.changed.set()

    async def write_status(self, status: Mapping[str, object]) -> None:
        self.statuses.append(status)
