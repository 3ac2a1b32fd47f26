"""Scenario 1 on the real control plane: a backlog scales the Deployment through ``/scale``
within one polling interval (+ 1 s), an emptied queue brings it back to min through drains,
the Events and the status annotation say so, and a steady state writes nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import redis.asyncio as aioredis

from tests.cluster import audit
from tests.cluster.api import Api, eventually
from tests.cluster.conftest import Cluster
from tests.cluster.harness import (
    STATUS,
    consumer_args,
    events_of,
    k8s_events,
    ready_pods,
    spec_replicas,
    start_controller,
    worker,
)
from tests.cluster.node import NodeEmulator
from tests.processor import Processor

POLL_S = 2.0
MESSAGES = 500
PER_REPLICA = 50
QUIET_S = 5.0


async def test_backlog_scales_up_within_one_interval_then_back_to_min_and_quiet(
    cluster: Cluster,
    api: Api,
    namespace: str,
    redis_url: str,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    path = f"/apis/apps/v1/namespaces/{namespace}/deployments/worker"
    async with Processor() as processor:
        processor.respond(*["hang"] * MESSAGES)  # every message is held until released
        args = consumer_args(redis_url, "jobs", processor.url, "--concurrency=4")
        manifest = worker(
            namespace, "worker", args, redis_list="jobs",
            messages_per_replica=str(PER_REPLICA), min_replicas="1", max_replicas="10",
            polling_interval=f"{POLL_S}s", scale_down_stabilization="0s", drain="true",
            drain_timeout="30s",
        )  # fmt: skip
        await api.create(manifest)
        node = NodeEmulator(api, namespace, tmp_path)
        async with node.running_in_background():
            await eventually(lambda: ready_pods(api, namespace, "app=worker"), 30, "1 pod")
            controller = await start_controller(cluster, tmp_path, redis_url, namespace)
            try:
                # Steady at 1: the controller has written its status once.
                await eventually(
                    lambda: _status(api, path), 30, "the first status annotation", step_s=0.1
                )
                ids = [json.dumps({"id": i}).encode() for i in range(MESSAGES)]
                pushed = time.time()
                await redis_client.lpush("jobs", *ids)
                await eventually(
                    lambda: _scaled_to(api, namespace, 10), POLL_S + 1, "/scale 10", step_s=0.02
                )
                [up] = [
                    r
                    for r in audit.read(cluster.plane.audit_log)
                    if r.resource == "deployments/scale" and r.verb == "patch" and r.at >= pushed
                ]
                scale_up_s = up.at - pushed
                assert scale_up_s <= POLL_S + 1, scale_up_s

                await eventually(
                    lambda: _n_ready(api, namespace, 10), 60, "10 pods ready", step_s=0.2
                )
                processor.release()
                await eventually(
                    lambda: _all_accepted(processor, ids), 60, "every message processed"
                )
                await eventually(
                    lambda: _scaled_to(api, namespace, 1), 60, "back to min", step_s=0.2
                )
                await eventually(
                    lambda: _settled(node, api, namespace), 60, "9 pods removed", step_s=0.2
                )
                # The next decision (one polling interval later) records what is now.
                status = await eventually(
                    lambda: _status_at(api, path, 1), POLL_S * 2 + 1, "status desired=current=1"
                )
                assert status["reason"] == "TooFewReplicas", status
                assert status["readings"] == {"redis:jobs": 0}, status
                reasons = [
                    (e["reason"], e["message"]) for e in await k8s_events(api, namespace, "worker")
                ]
                assert [r for r, m in reasons if "scaled up to 10" in m] == ["ScaleUp"], reasons
                assert [m for _, m in reasons if "scaled down to 1" in m], reasons
                assert not [r for r, _ in reasons if r == "UndrainedPodRemoved"], reasons
                assert len(events_of(controller, "drain acknowledged")) >= 1

                quiet_from = time.time()
                await eventually(
                    lambda: _quiet_for(cluster, quiet_from), QUIET_S + 5, "5 s of steady state"
                )
            finally:
                assert await controller.stop() == 0, controller.tail()
            assert not node.errors, node.errors
    assert await redis_client.llen("jobs") == 0
    print(f"\n/scale 10 written {scale_up_s:.2f} s after the push (interval {POLL_S} s)")


async def _status(api: Api, path: str) -> dict[str, object] | None:
    annotations = (await api.get(path))["metadata"].get("annotations") or {}
    text = annotations.get(STATUS)
    return json.loads(text) if text else None


async def _status_at(api: Api, path: str, replicas: int) -> dict[str, object] | None:
    status = await _status(api, path)
    if status is None or (status["desired"], status["current"]) != (replicas, replicas):
        return None
    return status


async def _scaled_to(api: Api, namespace: str, replicas: int) -> bool:
    return await spec_replicas(api, namespace, "worker") == replicas


async def _n_ready(api: Api, namespace: str, count: int) -> bool:
    return len(await ready_pods(api, namespace, "app=worker")) == count


async def _all_accepted(processor: Processor, ids: list[bytes]) -> bool:
    return set(processor.accepted) >= set(ids)


async def _settled(node: NodeEmulator, api: Api, namespace: str) -> bool:
    pods = await api.items(f"/api/v1/namespaces/{namespace}/pods", "app=worker")
    return len(pods) == 1 and len(node.removed()) == 9


async def _quiet_for(cluster: Cluster, since: float) -> bool:
    """True once ``QUIET_S`` have passed since ``since`` without one write by the controller
    (Lease renewals aside); fails at once on a write."""
    writes = audit.writes(audit.read(cluster.plane.audit_log), since)
    assert not writes, [(w.verb, w.resource, w.name) for w in writes]
    return time.time() - since >= QUIET_S
