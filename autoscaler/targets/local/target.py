"""The local target: a workload's replicas are processes on this machine.

Used by ``autoscaler run --local FILE.yaml`` (workers on plain VMs) and by ``autoscaler
demo``. It behaves like a Deployment's ReplicaSet, so the controller, the drain protocol
and the reaper drive it unchanged:

- ``scale(n)`` starts replicas ``<workload>-<run id>-<k>`` (k never reused; the run id
  is new at every start of the controller, so no id is shared with a replica a previous
  start left behind; without one, ``<workload>-<k>``) from the workload's command, or
  stops the surplus: lowest deletion cost first (the drainer gives its drained victims
  the lowest), then not running, then newest — exactly those, never others;
- a replica whose process dies is restarted under the same id (a kubelet restarting a
  container), unless it is being removed (see ``localproc``);
- ``record_event`` and ``write_status`` log and keep the last few in memory (the demo's
  view shows them).

``LocalInventory`` plays the Kubernetes watch: it tells the controller about every
workload at start and after each scale (``WorkloadEvent``). ``autoscaler.app.local``
wires both to the controller.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from autoscaler.annotations import ANNOTATION_PREFIX
from autoscaler.errors import ReplicasChangedError
from autoscaler.logs import log_event
from autoscaler.targets.local.file import LocalWorkload, fill
from autoscaler.targets.local.orphans import OWNER_ENV
from autoscaler.targets.local.proc import ReplicaProcess
from autoscaler.workload import ReplicaInfo, WorkloadEvent, WorkloadRef

logger = logging.getLogger(__name__)

NAMESPACE = "local"
KEEP_LAST = 50  # events and statuses kept in memory per workload


@dataclass(frozen=True)
class TargetEvent:
    at: float  # epoch seconds
    reason: str
    message: str
    warning: bool


class LocalTarget:
    """One workload's replicas as local process groups."""

    def __init__(
        self,
        workload: LocalWorkload,
        *,
        redis_url: str | None = None,
        namespace: str = NAMESPACE,
        log_dir: Path | None = None,
        grace_period_s: float = 30.0,
        on_scaled: Callable[[LocalTarget], None] = lambda target: None,
        run_id: str = "",
        owner: str = "",
    ) -> None:
        """``run_id``: this start's part of the replica ids; ``owner``: the run key every
        replica's environment carries (``orphans.OWNER_ENV``), for the next start's sweep."""
        self.workload = workload
        self.run_id = run_id
        self.owner = owner
        self._ref = WorkloadRef(namespace, workload.name)
        triggers = workload.spec.redis_triggers
        self.redis_url = (triggers[0].redis_url if triggers else None) or redis_url or ""
        self.log_dir = log_dir
        self.grace_period_s = grace_period_s
        self.on_scaled = on_scaled
        self.desired = 0
        self.events: deque[TargetEvent] = deque(maxlen=KEEP_LAST)
        self.statuses: deque[Mapping[str, object]] = deque(maxlen=KEEP_LAST)
        self.live: dict[str, ReplicaProcess] = {}  # not being removed, in start order
        self.removing: dict[str, ReplicaProcess] = {}
        self._gone: list[ReplicaProcess] = []  # stopped: kept for the replica-seconds
        self._stops: set[asyncio.Task[None]] = set()
        self._numbers = itertools.count(1)
        self._lock = asyncio.Lock()

    @property
    def ref(self) -> WorkloadRef:
        return self._ref

    # ---- the Target protocol --------------------------------------------------------

    async def scale(self, replicas: int, *, expected: int | None = None) -> None:
        async with self._lock:
            if expected is not None and expected != self.desired:
                raise ReplicasChangedError(
                    f"{self._ref}: replicas are {self.desired}, not {expected}", self.desired
                )
            self.desired = replicas
            while len(self.live) < replicas:
                self._start_one()
            surplus = len(self.live) - replicas
            for victim in sorted(self.live.values(), key=_removal_rank)[: max(0, surplus)]:
                self._stop_one(victim)
        self.on_scaled(self)

    async def replicas(self) -> list[ReplicaInfo]:
        return [
            ReplicaInfo(p.name, p.running, p.created_at, p.deletion_cost or 0)
            for p in self.live.values()
        ]

    async def set_deletion_cost(self, name: str, cost: int | None) -> None:
        replica = self.live.get(name)
        if replica is not None:  # a replica already gone needs no rank (Kubernetes: 404)
            replica.deletion_cost = cost

    async def record_event(self, reason: str, message: str, *, warning: bool = False) -> None:
        self.events.append(TargetEvent(time.time(), reason, message, warning))
        level = logging.WARNING if warning else logging.INFO
        log_event(
            logger,
            "event",
            level,
            namespace=self.ref.namespace,
            workload=self.ref.name,
            reason=reason,
            message=message,
        )

    async def write_status(self, status: Mapping[str, object]) -> None:
        self.statuses.append(dict(status))

    # ---- replicas -------------------------------------------------------------------

    def _start_one(self) -> None:
        prefix = f"{self.workload.name}-{self.run_id}-" if self.run_id else f"{self.workload.name}-"
        name = f"{prefix}{next(self._numbers)}"
        values = {"redis_url": self.redis_url, "queue": self.workload.queue, "replica_id": name}
        env = {**os.environ, "POD_NAME": name}
        if self.owner:
            env[OWNER_ENV] = self.owner
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        env.update({k: fill(v, values) for k, v in self.workload.env.items()})
        replica = ReplicaProcess(
            name,
            [fill(part, values) for part in self.workload.command],
            env,
            log_path=self.log_dir / f"{name}.log" if self.log_dir else None,
            grace_period_s=self.grace_period_s,
            on_restart=self._restarted,
        )
        self.live[name] = replica
        replica.start()
        log_event(logger, "replica started", workload=self.ref.name, replica=name)

    def _stop_one(self, replica: ReplicaProcess) -> None:
        del self.live[replica.name]
        self.removing[replica.name] = replica
        task = asyncio.create_task(self._stop(replica), name=f"stop-{replica.name}")
        self._stops.add(task)
        task.add_done_callback(self._stops.discard)

    async def _stop(self, replica: ReplicaProcess) -> None:
        try:
            await replica.stop()
        finally:
            self.removing.pop(replica.name, None)
            self._gone.append(replica)
            log_event(logger, "replica stopped", workload=self.ref.name, replica=replica.name)

    def _restarted(self, name: str, code: int | None) -> None:
        message = f"replica {name} exited (code {code}): restarting it under the same id"
        self.events.append(TargetEvent(time.time(), "ReplicaRestarted", message, True))

    def kill(self, name: str) -> bool:
        """SIGKILL one replica's whole group (``demo --chaos``); it is restarted."""
        replica = self.live.get(name)
        return replica is not None and replica.kill()

    def replica_seconds(self, now: float | None = None) -> float:
        """Seconds summed over every replica, from its start to the end of its stop."""
        at = time.monotonic() if now is None else now
        every = [*self.live.values(), *self.removing.values(), *self._gone]
        return sum(p.seconds_alive(at) for p in every)

    def restarts(self) -> int:
        """Restarts of every replica so far (crashes, ``kill``)."""
        return sum(p.restarts for p in [*self.live.values(), *self.removing.values(), *self._gone])

    async def settled(self) -> None:
        """Wait until every replica being removed has exited."""
        while self._stops:
            await asyncio.gather(*self._stops, return_exceptions=True)
            self._stops = {task for task in self._stops if not task.done()}

    async def aclose(self) -> None:
        """Stop every replica (SIGTERM, then SIGKILL after the grace period) and await them."""
        async with self._lock:
            for replica in list(self.live.values()):
                self._stop_one(replica)
        await self.settled()


def _removal_rank(replica: ReplicaProcess) -> tuple[int, bool, float]:
    """Lowest deletion cost first, then not running, then newest (a ReplicaSet's order)."""
    return (replica.deletion_cost or 0, replica.running, -replica.created_at)


class LocalInventory:
    """The local workloads, their targets, and the events that tell the controller of them."""

    def __init__(
        self,
        workloads: list[LocalWorkload],
        *,
        redis_url: str | None = None,
        namespace: str = NAMESPACE,
        log_dir: Path | None = None,
        grace_period_s: float = 30.0,
        run_id: str = "",
        owner: str = "",
    ) -> None:
        self.targets: dict[WorkloadRef, LocalTarget] = {}
        self.workloads: dict[WorkloadRef, LocalWorkload] = {}
        self._apply: Callable[[WorkloadEvent], None] | None = None
        for w in workloads:
            target = LocalTarget(
                w,
                redis_url=redis_url,
                namespace=namespace,
                log_dir=log_dir,
                grace_period_s=grace_period_s,
                on_scaled=self._scaled,
                run_id=run_id,
                owner=owner,
            )
            self.targets[target.ref] = target
            self.workloads[target.ref] = w

    def target_for(self, ref: WorkloadRef) -> LocalTarget:
        """The controller's ``target_factory``."""
        return self.targets[ref]

    def event(self, target: LocalTarget) -> WorkloadEvent:
        spec_keys = self.workloads[target.ref].spec_keys
        annotations = {ANNOTATION_PREFIX + key: value for key, value in spec_keys.items()}
        return WorkloadEvent(target.ref, annotations, target.desired)

    async def start(self, apply: Callable[[WorkloadEvent], None]) -> None:
        """Start each workload's first replicas, then announce every workload."""
        for ref, target in self.targets.items():
            w = self.workloads[ref]
            await target.scale(
                w.spec.min_replicas if w.initial_replicas is None else w.initial_replicas
            )
        self._apply = apply
        for target in self.targets.values():
            apply(self.event(target))

    def _scaled(self, target: LocalTarget) -> None:
        if self._apply is not None:
            self._apply(self.event(target))

    async def aclose(self) -> None:
        self._apply = None
        await asyncio.gather(*(t.aclose() for t in self.targets.values()))
