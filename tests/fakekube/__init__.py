"""A fake Kubernetes API server over real HTTP, for tests that use the real client library.

It serves the subset a queue-driven autoscaler touches: discovery; core/v1 Pods, Events,
Namespaces; apps/v1 Deployments, ReplicaSets, StatefulSets (with ``/scale`` and
``/status``); coordination.k8s.io/v1 Leases; events.k8s.io/v1 Events; autoscaling/v1+v2
HorizontalPodAutoscalers. Lists with label/field selectors and pagination, watches with
resourceVersion resume and 410 Expired, JSON/merge/strategic patches, 409 on stale
resourceVersions, a ReplicaSet controller that deletes pods in Kubernetes' order, fault
injection, and a record of every request with its RBAC attributes.

Modules: ``model`` (objects, errors, clock), ``resources`` (types, discovery),
``selectors``, ``patch``, ``store`` (storage, history, watchers), ``api`` (REST semantics),
``reactor`` (fake controllers), ``rbac`` (request attributes, RBAC), ``handlers`` (HTTP),
``server`` (``FakeKubeServer``), ``fixtures`` (the ``fake_kube`` pytest fixture).
"""

from tests.fakekube.model import FakeClock, KubeError, Obj
from tests.fakekube.rbac import RecordedRequest, denied, rbac_allows, rbac_tuple, request_info
from tests.fakekube.reactor import DELETION_COST, deletion_cost, deletion_rank
from tests.fakekube.server import FakeKubeServer

__all__ = [
    "DELETION_COST",
    "FakeClock",
    "FakeKubeServer",
    "KubeError",
    "Obj",
    "RecordedRequest",
    "deletion_cost",
    "deletion_rank",
    "denied",
    "rbac_allows",
    "rbac_tuple",
    "request_info",
]
