"""What gets scaled: the ``Target`` protocol.

A target is one workload whose replicas the controller sets: a Kubernetes Deployment or
StatefulSet (``targets.kubernetes``, through ``autoscaler.kube``) or a set of local
processes (``targets.local``, for the demo and for workers on plain VMs). The policy,
the drain protocol and the reaper only ever see this protocol, never which one it is.
The value types it speaks (``WorkloadRef``, ``ReplicaInfo``) are in ``autoscaler.workload``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from autoscaler.workload import ReplicaInfo, WorkloadRef


class Target(Protocol):
    """The operations the loop and the drain protocol need on one workload."""

    @property
    def ref(self) -> WorkloadRef: ...

    async def scale(self, replicas: int, *, expected: int | None = None) -> None:
        """Set the desired replica count (Kubernetes: through the ``/scale`` subresource).

        With ``expected``, only if the desired count is still ``expected``; otherwise raise
        ``ReplicasChangedError`` and change nothing (a drain's write comes long after its
        decision: a scale made meanwhile by someone else must not be overwritten)."""

    async def replicas(self) -> list[ReplicaInfo]:
        """The replicas that exist now."""

    async def set_deletion_cost(self, name: str, cost: int | None) -> None:
        """Rank a replica for removal (lowest first); ``None`` restores the default."""

    async def record_event(self, reason: str, message: str, *, warning: bool = False) -> None:
        """Tell the workload's owner (Kubernetes: an Event on the workload)."""

    async def write_status(self, status: Mapping[str, object]) -> None:
        """Record the last decision (Kubernetes: the ``queue-autoscaler.io/status`` annotation)."""
