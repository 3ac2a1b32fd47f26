"""Scenario 4 on the real control plane: a scale-down during a Deployment's rollout.

Kubernetes splits a Deployment's scale-down across its active ReplicaSets in proportion to
their sizes (``deployment/sync.go`` ``scale()``), each ReplicaSet ranking only its own pods:
the drain cannot choose which pods go. So the scale-down waits until one ReplicaSet is left
(``docs/deploy.md``, "Rollouts"), saying so with a repeating ``ScaleDownHeld`` Event.

Both cases, on one Deployment (maxSurge 25%, maxUnavailable 0): a rollout in progress (the
new image's pod stays not-ready, so the rollout stands half-way), then the same Deployment
paused half-way (its new pod ready: a paused rollout does not progress). Resumed, the rollout
completes and the held scale-down drains to min; no pod holding a message was removed
undrained by the scale-down. On the way, the repeated Event is bumped (PATCH) and, once the
test has changed it behind the controller's back, re-read after the 409 (GET).
"""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis

from tests.cluster.api import JSON_PATCH, Api, Obj, eventually
from tests.cluster.conftest import Cluster
from tests.cluster.harness import (
    DrainWitness,
    annotate,
    consumer_args,
    controlled,
    controller_requests,
    k8s_events,
    pods_of,
    settled_at,
    spec_replicas,
    undrained_events,
    worker,
)
from tests.cluster.node import NodeEmulator
from tests.processor import Processor

NEW_IMAGE = "queue-autoscaler:v2"


def _image(pod: Obj) -> str:
    return str(pod["spec"]["containers"][1]["image"])


async def test_scale_down_waits_for_a_rollout_in_progress_and_for_a_paused_one(
    cluster: Cluster,
    api: Api,
    namespace: str,
    redis_url: str,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/worker"
    hold_rollout = True
    new_pods: set[str] = set()

    def unready(pod: Obj) -> bool:  # the new image's readiness probe fails while held
        if _image(pod) != NEW_IMAGE:
            return False
        new_pods.add(pod["metadata"]["name"])
        return hold_rollout

    witness = DrainWitness(redis_client, "jobs")
    node = NodeEmulator(
        api, namespace, tmp_path, on_terminating=witness.on_terminating, unready_if=unready
    )
    async with Processor() as processor:
        args = consumer_args(redis_url, "jobs", processor.url, "--concurrency=2")
        manifest = worker(
            namespace, "worker", args, replicas=4, grace_s=5, redis_list="jobs",
            messages_per_replica="50", min_replicas="4", max_replicas="4",
            polling_interval="1s", scale_down_stabilization="0s", drain="true",
            drain_timeout="30s",
        )  # fmt: skip
        manifest["spec"]["strategy"] = {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0},
        }
        async with controlled(cluster, api, node, redis_url, manifest, ready=4) as controller:
            await eventually(lambda: _has_status(api, path), 30, "the first decision")
            new_image = [{"op": "replace", "path": "/spec/template/spec/containers/1/image",
                          "value": NEW_IMAGE}]  # fmt: skip
            await api.patch(path, new_image, JSON_PATCH)
            await eventually(lambda: _two_sets(api, namespace), 30, "4 old pods + 1 new")

            # 1. A rollout in progress: the scale-down to min waits, and says why.
            await annotate(api, namespace, "worker", min_replicas="1")
            held = await eventually(lambda: _held(api, namespace, 2), 30, "ScaleDownHeld ×2")
            assert "rollout is in progress" in held["message"], held
            assert await spec_replicas(api, namespace, "worker") == 4

            # 2. Paused half-way: the new pod turns ready, the rollout still does not move.
            await api.patch(path, {"spec": {"paused": True}})
            hold_rollout = False
            # Change the Event behind the controller's back: its next bump meets a 409,
            # re-reads the Event and bumps that.
            count = held["count"]
            await api.patch(
                f"/api/v1/namespaces/{namespace}/events/{held['metadata']['name']}",
                {"metadata": {"labels": {"seen-by": "test"}}},
            )
            bumped = await eventually(lambda: _held(api, namespace, count + 2), 30, "2 bumps")
            assert bumped["metadata"]["labels"] == {"seen-by": "test"}, bumped
            assert await spec_replicas(api, namespace, "worker") == 4
            assert await _two_sets(api, namespace)

            # 3. Resumed: the rollout completes, then the scale-down drains to min.
            await api.patch(path, {"spec": {"paused": False}})
            await eventually(lambda: settled_at(api, namespace, 1), 90, "1 pod left", step_s=0.2)
            [last] = await pods_of(api, namespace, "app=worker")
            assert _image(last) == NEW_IMAGE
            events = await k8s_events(api, namespace, "worker")
        held_lines = [line for line in controller.lines() if line.get("event") == "scale-down held"]
        assert held_lines and held_lines[0]["replica_sets"].count(",") == 1, held_lines[:1]
    # What the scale-down removed: new pods (the rollout's own SIGTERMs took the old ones).
    removed_new = new_pods & set(witness.seen)
    assert len(removed_new) == 3, (removed_new, sorted(witness.seen))
    scaled_away = {p: e for p, e in witness.undrained().items() if p in new_pods}
    assert scaled_away == {}, scaled_away
    # The cheapest victims are the newest pods, often picked before their sidecar has
    # registered: the drain waits for it to register and drain (docs/deploy.md). Each one
    # removed had a consumer that drained — none removed before it registered, nor after.
    unregistered = sorted(p for p in removed_new if not witness.seen[p])
    assert unregistered == [], unregistered
    assert undrained_events(events) == []
    events_requests = [
        (r.verb, r.code) for r in controller_requests(cluster, namespace) if r.resource == "events"
    ]
    assert ("patch", 409) in events_requests, events_requests
    assert ("get", 200) in events_requests, events_requests


async def _has_status(api: Api, path: str) -> bool:
    annotations = (await api.get(path))["metadata"].get("annotations") or {}
    return "queue-autoscaler.io/status" in annotations


async def _two_sets(api: Api, namespace: str) -> bool:
    pods = [p for p in await pods_of(api, namespace, "app=worker")
            if not p["metadata"].get("deletionTimestamp")]  # fmt: skip
    owners = {p["metadata"]["ownerReferences"][0]["name"] for p in pods}
    return len(owners) == 2 and len(pods) == 5


async def _held(api: Api, namespace: str, count: int) -> Obj | None:
    for event in await k8s_events(api, namespace, "worker"):
        if event["reason"] == "ScaleDownHeld" and int(event.get("count") or 1) >= count:
            return event
    return None
