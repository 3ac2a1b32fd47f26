"""The API operations the targets need, by workload kind: ``/scale``, pods, Events, patches.

Thin on purpose: each is one ``KubeClient.call`` returning the JSON object, so the
target logic (``autoscaler.targets.kubernetes``) never names a generated method. Patches
are JSON merge patches (RFC 7386): ``None`` deletes a key, and a patch carrying
``metadata.resourceVersion`` is conditional (409 when stale); a conditional ``/scale`` is a
JSON patch with a ``test``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from autoscaler.errors import KubeError
from autoscaler.workload import WorkloadRef

from .client import MERGE_PATCH, ApiMethod, KubeClient, Obj

API_VERSIONS = {"Deployment": "apps/v1", "StatefulSet": "apps/v1", "ReplicaSet": "apps/v1"}
JSON_PATCH = "application/json-patch+json"
_SNAKE = {"Deployment": "deployment", "StatefulSet": "stateful_set", "ReplicaSet": "replica_set"}


def _apps(kube: KubeClient, kind: str, template: str) -> ApiMethod:
    if kind not in _SNAKE:
        raise KubeError(f"kind {kind} is not scalable here (Deployment, StatefulSet, ReplicaSet)")
    method: ApiMethod = getattr(kube.apps, template.format(_SNAKE[kind]))
    return method


async def read_scale(kube: KubeClient, ref: WorkloadRef, *, background: bool = False) -> Obj:
    """The workload's ``autoscaling/v1`` Scale (spec.replicas, status.replicas/selector);
    ``background``: for an Event's uid, behind every other call."""
    method = _apps(kube, ref.kind, "read_namespaced_{}_scale")
    return await kube.call(method, ref.name, ref.namespace, background=background)


async def patch_scale(
    kube: KubeClient, ref: WorkloadRef, replicas: int, *, expected: int | None = None
) -> Obj:
    """Set ``spec.replicas`` through the ``/scale`` subresource; returns the new Scale.

    With ``expected``, a JSON patch (RFC 6902) whose ``test`` of ``/spec/replicas`` makes
    the write conditional: the API server applies it atomically to the current object and
    answers 422 when the test fails (someone else scaled meanwhile).
    """
    method = _apps(kube, ref.kind, "patch_namespaced_{}_scale")
    if expected is None:
        body: Any = {"spec": {"replicas": replicas}}
        return await kube.call(method, ref.name, ref.namespace, body, _content_type=MERGE_PATCH)
    body = [
        {"op": "test", "path": "/spec/replicas", "value": expected},
        {"op": "replace", "path": "/spec/replicas", "value": replicas},
    ]
    return await kube.call(method, ref.name, ref.namespace, body, _content_type=JSON_PATCH)


async def patch_workload_annotations(
    kube: KubeClient,
    ref: WorkloadRef,
    annotations: Mapping[str, str | None],
    *,
    background: bool = False,
) -> Obj:
    """``background``: may wait behind every other call (the status annotation)."""
    method = _apps(kube, ref.kind, "patch_namespaced_{}")
    body = {"metadata": {"annotations": dict(annotations)}}
    return await kube.call(
        method, ref.name, ref.namespace, body, _content_type=MERGE_PATCH, background=background
    )


async def list_pods(kube: KubeClient, namespace: str, label_selector: str) -> list[Obj]:
    """Every pod matching ``label_selector`` (one request; a workload's pods fit in one)."""
    body = await kube.call(kube.core.list_namespaced_pod, namespace, label_selector=label_selector)
    items: list[Obj] = body.get("items") or []
    return items


async def patch_pod_annotations(
    kube: KubeClient, namespace: str, name: str, annotations: Mapping[str, str | None]
) -> Obj:
    body = {"metadata": {"annotations": dict(annotations)}}
    return await kube.call(
        kube.core.patch_namespaced_pod, name, namespace, body, _content_type=MERGE_PATCH
    )


# Events wait behind every scale, drain and read (``KubeClient.call(background=True)``):
# an operator's record, not what keeps a backlog from being served.


async def create_event(kube: KubeClient, namespace: str, event: Obj) -> Obj:
    return await kube.call(kube.core.create_namespaced_event, namespace, event, background=True)


async def read_event(kube: KubeClient, namespace: str, name: str) -> Obj:
    return await kube.call(kube.core.read_namespaced_event, name, namespace, background=True)


async def patch_event(kube: KubeClient, namespace: str, name: str, patch: Mapping[str, Any]) -> Obj:
    return await kube.call(
        kube.core.patch_namespaced_event,
        name,
        namespace,
        dict(patch),
        _content_type=MERGE_PATCH,
        background=True,
    )
