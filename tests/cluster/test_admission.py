"""deploy/admission/: the real apiserver lets the controller's ServiceAccount change only
``spec.replicas`` through ``/scale``, our status annotation on workloads and the deletion
cost on pods — and rejects anything else it tries with a verb RBAC does grant it."""

from __future__ import annotations

from tests.cluster.api import JSON_PATCH, Api, ApiError, eventually
from tests.cluster.harness import DELETION_COST, STATUS, worker

DRY_RUN = {"dryRun": "All"}  # admission runs on a dry run too; nothing is stored


async def _status(call: object) -> int:
    try:
        await call  # type: ignore[misc]
    except ApiError as e:
        return e.status
    return 200


async def test_the_controller_account_may_change_only_replicas_status_and_deletion_cost(
    api: Api, controller_api: Api, namespace: str
) -> None:
    manifest = worker(namespace, "w", ["consume"], replicas=0, redis_list="jobs")
    await api.create(manifest)
    deployment = f"/apis/apps/v1/namespaces/{namespace}/deployments/w"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": namespace, "annotations": {"mine": "1"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    await api.create(pod)
    pod_path = f"/api/v1/namespaces/{namespace}/pods/p"

    def annotate(path: str, key: str, value: str | None, dry: bool = True) -> object:
        patch = {"metadata": {"annotations": {key: value}}}
        return controller_api.request(
            "PATCH",
            path,
            patch,
            content_type="application/merge-patch+json",
            params=DRY_RUN if dry else None,
        )

    # The policy is compiled a moment after it is created: wait for its first rejection.
    await eventually(
        lambda: _is_forbidden(annotate(deployment, "queue-autoscaler.io/min-replicas", "5")),
        30,
        "the ValidatingAdmissionPolicy to be in force",
    )

    # Allowed: exactly the three things the controller writes, and its Events.
    scale = {"spec": {"replicas": 3}}
    assert await _status(controller_api.patch(f"{deployment}/scale", scale)) == 200
    assert await _status(annotate(deployment, STATUS, '{"desired":3}', dry=False)) == 200
    assert await _status(annotate(deployment, STATUS, None, dry=False)) == 200
    assert await _status(annotate(pod_path, DELETION_COST, "-5", dry=False)) == 200
    assert await _status(annotate(pod_path, DELETION_COST, None, dry=False)) == 200
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "w.probe", "namespace": namespace},
        "involvedObject": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "w",
            "namespace": namespace,
        },
        "reason": "Probe",
        "message": "the policy leaves Events alone",
        "type": "Normal",
    }
    await controller_api.create(event)  # raises unless 2xx
    assert (await api.get(f"/api/v1/namespaces/{namespace}/events/w.probe"))["reason"] == "Probe"

    # Rejected: everything else, with the policy's message.
    image = [
        {
            "op": "replace",
            "path": "/spec/template/spec/containers/0/image",
            "value": "evil:latest",
        }
    ]
    rejected = {
        "image change": controller_api.request("PATCH", deployment, image, content_type=JSON_PATCH),
        "another annotation on the workload": annotate(deployment, "example.com/x", "1", False),
        "one of ours but not the status": annotate(
            deployment, "queue-autoscaler.io/paused", "true"
        ),
        "a label": controller_api.request(
            "PATCH",
            deployment,
            {"metadata": {"labels": {"queue-autoscaler.io/enabled": "false"}}},
            content_type="application/merge-patch+json",
            params=DRY_RUN,
        ),
        "another annotation on a pod": annotate(pod_path, "example.com/x", "1"),
        "removing a pod's annotation": annotate(pod_path, "mine", None),
        "the status annotation on a pod": annotate(pod_path, STATUS, "{}"),
        "a pod's image": controller_api.request(
            "PATCH",
            pod_path,
            [{"op": "replace", "path": "/spec/containers/0/image", "value": "evil"}],
            content_type=JSON_PATCH,
            params=DRY_RUN,
        ),
    }
    outcomes = {what: await _error(call) for what, call in rejected.items()}
    assert {what: status for what, (status, _) in outcomes.items()} == dict.fromkeys(
        rejected, 403
    ), outcomes
    assert all("queue-autoscaler-controller-limits" in body for _, body in outcomes.values())
    current = await api.get(deployment)
    assert current["spec"]["template"]["spec"]["containers"][0]["image"] == "python:3.11-slim"
    assert "example.com/x" not in current["metadata"]["annotations"]
    assert current["spec"]["replicas"] == 3  # the /scale write went through


async def _is_forbidden(call: object) -> bool:
    return await _status(call) == 403


async def _error(call: object) -> tuple[int, str]:
    try:
        await call  # type: ignore[misc]
    except ApiError as e:
        return e.status, e.body
    return 200, ""


async def test_admins_are_not_restricted_by_the_policy(api: Api, namespace: str) -> None:
    """The policy matches the controller's account only: a user still changes the image."""
    await api.create(worker(namespace, "w", ["consume"], replicas=0))
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/w"
    patch = [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "v2"}]
    changed = await api.patch(path, patch, JSON_PATCH)
    assert changed["spec"]["template"]["spec"]["containers"][0]["image"] == "v2"
