"""Status annotation writes: coalesced, one at a time, behind every scale and drain write.

After a start or a failover every workload's first decision is "new", so 10,000 status
writes are due at once; spawned as 10,000 tasks they queued at the Kubernetes client's
rate limit ahead of any scale-up decided meanwhile (a backlog waited 497 s for its
``/scale``). Here each workload has at most one pending status, the latest (a newer one
replaces it unwritten), and a single task writes them oldest first, one request at a
time: a scale or drain write waits behind at most one status write, never behind the
fleet's. The target skips a write whose document equals the last in substance (the
timestamps aside): ``targets.kubernetes``. The documents are opaque here, and built
only when written (``submit`` takes the function that builds one): when every queue moves,
most workloads' documents are replaced before their turn (20 writes a second against
10,000 workloads deciding anew each cycle), and building each one cost ~30% of a moving
cycle's CPU at 10,000 workloads (docs/performance.md, goal 1).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, Protocol

from autoscaler.errors import AutoscalerError
from autoscaler.logs import log_event
from autoscaler.workload import WorkloadRef

logger = logging.getLogger(__name__)

Spawn = Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]
StatusBuilder = Callable[[], Mapping[str, object]]  # the document, built when written


class StatusTarget(Protocol):
    """All a status write needs of a ``Target``."""

    async def write_status(self, status: Mapping[str, object]) -> None: ...


class StatusWriter:
    """Latest status per workload, written by one task at a time (lowest priority)."""

    def __init__(self, spawn: Spawn) -> None:
        self._spawn = spawn
        self._pending: dict[WorkloadRef, tuple[StatusTarget, StatusBuilder]] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return len(self._pending)

    def submit(self, ref: WorkloadRef, target: StatusTarget, status: StatusBuilder) -> None:
        """Write ``status()`` soon; replaces any status of ``ref`` not yet written (and
        never built). ``status`` must capture what it shows: it runs later."""
        self._pending.pop(ref, None)  # re-queued at the back: the oldest goes first
        self._pending[ref] = (target, status)
        if self._task is None or self._task.done():
            self._task = self._spawn(self._drain())

    def forget(self, ref: WorkloadRef) -> None:
        self._pending.pop(ref, None)

    async def _drain(self) -> None:
        while self._pending:
            ref = next(iter(self._pending))
            target, status = self._pending.pop(ref)
            try:
                await target.write_status(status())
            except AutoscalerError as e:  # the next decision that changes writes again
                log_event(
                    logger,
                    "status write failed",
                    logging.WARNING,
                    namespace=ref.namespace,
                    workload=ref.name,
                    error=str(e),
                )
            await asyncio.sleep(0)  # let a decided scale-up start between two writes
