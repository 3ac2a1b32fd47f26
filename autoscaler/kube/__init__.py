"""The only package that talks to the Kubernetes API (``kubernetes.aio``, the official client).

- ``KubeClient`` (``client``): throttled (QPS/burst), retried (429/5xx/connection; 409 only
  in ``read_modify_write``), errors translated to ``autoscaler.errors.KubeError``.
- ``WorkloadWatcher`` (``workloads``): list + watch of the annotated Deployments and
  StatefulSets and of the HPAs, as ``WorkloadEvent``s; ``list_annotated_workloads`` lists
  them once (``autoscaler check --cluster``), through the same client and selector.
- ``LeaderElector`` (``leader``): leader election on a ``coordination.k8s.io/v1`` Lease.
- ``operations``: the ``/scale``, pod, Event and annotation calls ``KubeTarget`` makes;
  ``events``: Events on a workload, counted like client-go's recorder does, and the
  ``EventQueue`` that writes them in the background.
- ``api``: the operations the controller sends, by the generated methods' names, without
  the generated API classes (their import cost ~0.9 s and ~33 MB per start).
- ``secrets``: a workload's ``redis-auth-secret``, read with ``get`` only (opt-in RBAC).

No ``kubernetes.*`` or ``aiohttp.*`` exception leaves this package.
"""

from autoscaler.kube.client import ClientSettings, KubeClient
from autoscaler.kube.leader import (
    LeaderElector,
    LeaderSettings,
    default_identity,
    default_namespace,
)
from autoscaler.kube.listwatch import WatchSettings
from autoscaler.kube.workloads import WorkloadWatcher, list_annotated_workloads

__all__ = [
    "ClientSettings",
    "KubeClient",
    "LeaderElector",
    "LeaderSettings",
    "WatchSettings",
    "WorkloadWatcher",
    "default_identity",
    "default_namespace",
    "list_annotated_workloads",
]
