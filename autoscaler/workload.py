"""The workload model shared by every room: identity, inventory changes, replicas.

Ground floor: the Kubernetes inventory (``kube``), the targets, the drain protocol and the
loop all speak these types, so they live below all of them and import nothing of ours.

Terms: a *workload* is one scalable object (a Deployment, a StatefulSet, a set of local
processes); a *replica* is one pod (or local process) of it. A replica's ``name`` is also
the id of the sidecar consumer it runs (``POD_NAME``), which is how the drain protocol
finds the consumer of a pod in the registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, order=True, slots=True)  # one per workload: 10,000 (goal 5)
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
    # The controller.kubernetes.io/pod-deletion-cost it has, None when it has none: a drain
    # puts back exactly this value, never deleting a cost the user set.
    deletion_cost: int | None = None
    scheduled: bool = True  # False: Pending/unassigned — removed before anything else
    running: bool = True  # False: Pending or Unknown — removed before running ones
    # The ReplicaSet (or StatefulSet) that owns it. Pods of two ReplicaSets mean a rollout
    # is in progress (or paused): Kubernetes splits a scale-down across them.
    owner: str = ""
    # A StatefulSet pod's ordinal: a StatefulSet removes the highest ordinals, whatever the
    # deletion cost. None for every other kind of replica.
    ordinal: int | None = None


@dataclass(frozen=True, slots=True)  # the watch keeps the last per workload (goal 5)
class WorkloadEvent:
    """An inventory change: a workload appeared, changed or was deleted.

    ``replicas`` is the workload's desired count as last written (``spec.replicas``): the
    loop keeps it from the watch instead of reading ``/scale`` every cycle, so a steady
    state costs zero API calls. ``annotations`` is never changed once given; the
    Kubernetes watch gives a read-only view (``MappingProxyType``), which the loop keeps
    without a copy.
    """

    ref: WorkloadRef
    annotations: Mapping[str, str]
    replicas: int
    deleted: bool = False
    # Another autoscaler (an HPA) targets this workload: leave it alone.
    managed_elsewhere: str | None = None
