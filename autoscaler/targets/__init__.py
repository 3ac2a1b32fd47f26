"""What gets scaled: the ``Target`` protocol, and the workload model shared by the loop.

A target is one workload whose replicas the controller sets: a Kubernetes Deployment or
StatefulSet (``targets.kubernetes``, through ``autoscaler.kube``) or a set of local
processes (``targets.local``, for the demo and for workers on plain VMs). The policy,
the drain protocol and the reaper only ever see this protocol, never which one it is.

Terms: a *replica* is one pod (or local process); its ``name`` is also the id of the
sidecar consumer it runs (``POD_NAME``), which is how the drain protocol finds the
consumer of a pod in the registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, order=True)
class WorkloadRef:
    """A workload's identity; ``str()`` is ``namespace/name`` as in every log line."""

    namespace: str
    name: str
    kind: str = "Deployment"

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class ReplicaInfo:
    """One running replica as the target sees it."""

    name: str
    ready: bool
    created_at: float  # epoch seconds; newer replicas are removed first among equals
    deletion_cost: int = 0
    scheduled: bool = True  # False: Pending/unassigned — removed before anything else


@dataclass(frozen=True)
class WorkloadEvent:
    """An inventory change: a workload appeared, changed or was deleted.

    ``replicas`` is the workload's desired count as last written (``spec.replicas``): the
    loop keeps it from the watch instead of reading ``/scale`` every cycle, so a steady
    state costs zero API calls.
    """

    ref: WorkloadRef
    annotations: Mapping[str, str]
    replicas: int
    deleted: bool = False
    # Another autoscaler (an HPA) targets this workload: leave it alone.
    managed_elsewhere: str | None = None


class Target(Protocol):
    """The operations the loop and the drain protocol need on one workload."""

    @property
    def ref(self) -> WorkloadRef: ...

    async def scale(self, replicas: int) -> None:
        """Set the desired replica count (Kubernetes: through the ``/scale`` subresource)."""

    async def replicas(self) -> list[ReplicaInfo]:
        """The replicas that exist now."""

    async def set_deletion_cost(self, name: str, cost: int | None) -> None:
        """Rank a replica for removal (lowest first); ``None`` restores the default."""

    async def record_event(self, reason: str, message: str, *, warning: bool = False) -> None:
        """Tell the workload's owner (Kubernetes: an Event on the workload)."""

    async def write_status(self, status: Mapping[str, object]) -> None:
        """Record the last decision (Kubernetes: the ``queue-autoscaler.io/status`` annotation)."""
