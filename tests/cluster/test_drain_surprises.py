"""Scenarios 3, 5, 7 and 8 on the real control plane: what real Kubernetes does to a drain
that our fake never did.

3. A non-victim turns not-ready during the drain wait: the ReplicaSet would remove it before
   the victims marked −2³¹ (readiness beats cost), so the drain is cancelled and retried.
5. A StatefulSet: the victims are the highest ordinals, no deletion cost is written, and the
   StatefulSet removes them one at a time (OrderedReady).
7. An external ``PATCH /scale`` during a drain: the drain's conditional write is refused
   (JSON patch ``test``), and the external value stands.
8. A victim deleted during the drain, then the drain cancelled: restoring the others is not
   aborted by the 404, and the user's own ``pod-deletion-cost`` comes back exactly.

Each pod's consumer holds its messages ("hang") until the test releases the processor, so
the drain wait lasts as long as the test needs. ``DrainWitness`` records what every pod
held when Kubernetes began removing it.
"""

from __future__ import annotations

from pathlib import Path

import redis.asyncio as aioredis

from tests.cluster.api import Api, eventually
from tests.cluster.conftest import Cluster
from tests.cluster.harness import (
    DELETION_COST,
    DrainWitness,
    consumer_args,
    controlled,
    controller_requests,
    events_of,
    ids_of,
    k8s_events,
    live_pods,
    marked,
    pod_costs,
    processed_all,
    pushing,
    ready_pods,
    settled_at,
    undrained_events,
    worker,
)
from tests.cluster.node import NodeEmulator
from tests.e2e import Proc
from tests.processor import Processor

POLL = {"polling_interval": "1s", "scale_down_stabilization": "0s", "drain": "true"}


def _spec(replicas: int, **more: str) -> dict[str, str]:
    return {
        "redis_list": "jobs",
        "messages_per_replica": "100",
        "min_replicas": "1",
        "max_replicas": str(replicas),
        "drain_timeout": "60s",
        **POLL,
        **more,
    }


async def test_a_non_victim_turning_not_ready_during_the_drain_wait_cancels_and_retries(
    cluster: Cluster,
    api: Api,
    namespace: str,
    redis_url: str,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    ids = ids_of(6)
    witness = DrainWitness(redis_client, "jobs")
    node = NodeEmulator(api, namespace, tmp_path, on_terminating=witness.on_terminating)
    async with Processor() as processor:
        processor.respond(*["hang"] * len(ids))
        args = consumer_args(redis_url, "jobs", processor.url, "--concurrency=2")
        manifest = worker(namespace, "worker", args, replicas=3, grace_s=5, **_spec(3))

        async with controlled(
            cluster,
            api,
            node,
            redis_url,
            manifest,
            ready=3,
            before=pushing(redis_client, ids, processor),
        ) as controller:
            victims = await eventually(lambda: marked(api, namespace, 2), 30, "2 victims")
            [survivor] = sorted(set(await live_pods(api, namespace)) - set(victims))
            node.set_ready(survivor, False)  # its readiness probe fails mid-drain
            await eventually(
                lambda: _not_ready(api, namespace, survivor), 10, f"{survivor} not ready"
            )
            processor.release()
            await eventually(lambda: settled_at(api, namespace, 1), 60, "1 pod left", step_s=0.2)
            cancelled = [
                line
                for line in events_of(controller, "drain cancelled")
                if survivor in str(line.get("message"))
            ]
            assert cancelled, controller.tail()
            events = await k8s_events(api, namespace, "worker")
    assert survivor in witness.seen, (survivor, witness.seen)  # the retry drained it first
    assert len(witness.seen) == 2, witness.seen
    assert witness.undrained() == {}, witness.undrained()
    assert undrained_events(events) == []
    assert await processed_all(processor, ids)


async def test_statefulset_drains_its_highest_ordinals_without_deletion_cost_one_at_a_time(
    cluster: Cluster,
    api: Api,
    namespace: str,
    redis_url: str,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    ids = ids_of(4)
    witness = DrainWitness(redis_client, "jobs")
    node = NodeEmulator(api, namespace, tmp_path, on_terminating=witness.on_terminating)
    plural = "statefulsets"
    async with Processor() as processor:
        processor.respond(*["hang"] * len(ids))
        args = consumer_args(redis_url, "jobs", processor.url, "--concurrency=1")
        manifest = worker(
            namespace, "worker", args, replicas=4, kind="StatefulSet", grace_s=5, **_spec(4)
        )

        async with controlled(
            cluster,
            api,
            node,
            redis_url,
            manifest,
            ready=4,
            before=pushing(redis_client, ids, processor),
        ) as controller:
            [started] = await eventually(
                lambda: _started(controller), 30, "the drain started", step_s=0.1
            )
            assert started["victims"].split(",") == ["worker-3", "worker-2", "worker-1"]
            processor.release()
            await eventually(
                lambda: settled_at(api, namespace, 1, plural), 60, "1 pod left", step_s=0.2
            )
            costs = await pod_costs(api, namespace)
            events = await k8s_events(api, namespace, "worker")
            status = (await api.get(f"/apis/apps/v1/namespaces/{namespace}/{plural}/worker"))[
                "metadata"
            ]["annotations"]
    assert costs == {"worker-0": None}, costs
    requests = controller_requests(cluster, namespace)
    assert not [r for r in requests if r.resource == "pods" and r.verb == "patch"]
    assert {("statefulsets/scale", "patch"), ("statefulsets", "patch")} <= {
        (r.resource, r.verb) for r in requests if r.code == 200
    }
    assert "queue-autoscaler.io/status" in status
    # OrderedReady: each pod is gone before the StatefulSet begins removing the next.
    steps = [(name, what) for _, name, what in node.history if what in ("terminating", "removed")]
    assert steps == [
        ("worker-3", "terminating"),
        ("worker-3", "removed"),
        ("worker-2", "terminating"),
        ("worker-2", "removed"),
        ("worker-1", "terminating"),
        ("worker-1", "removed"),
    ], steps
    assert witness.undrained() == {}, witness.undrained()
    assert undrained_events(events) == []
    assert await processed_all(processor, ids)


async def test_an_external_scale_during_the_drain_is_not_overwritten(
    cluster: Cluster,
    api: Api,
    namespace: str,
    redis_url: str,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    ids = ids_of(4)
    node = NodeEmulator(api, namespace, tmp_path)
    scale = f"/apis/apps/v1/namespaces/{namespace}/deployments/worker/scale"
    async with Processor() as processor:
        processor.respond(*["hang"] * len(ids))
        args = consumer_args(redis_url, "jobs", processor.url, "--concurrency=1")
        manifest = worker(namespace, "worker", args, replicas=4, grace_s=2, **_spec(4))

        async with controlled(
            cluster,
            api,
            node,
            redis_url,
            manifest,
            ready=4,
            before=pushing(redis_client, ids, processor),
        ) as controller:
            await eventually(lambda: marked(api, namespace, 3), 30, "3 victims")
            await api.patch(scale, {"spec": {"replicas": 2}})  # kubectl scale --replicas=2
            await eventually(lambda: _n_live(api, namespace, 2), 30, "2 pods left")
            processor.release()
            line = await eventually(
                lambda: _superseded(controller), 30, "the drain's write refused", step_s=0.1
            )
            # Then a fresh decision from 2, conditional on 2, brings it to min.
            await eventually(lambda: settled_at(api, namespace, 1), 60, "1 pod left", step_s=0.2)
    requests = [r for r in controller_requests(cluster, namespace) if r.resource.endswith("/scale")]
    patches = [r.code for r in requests if r.verb == "patch"]
    assert patches[0] == 422 and patches[-1] == 200, patches  # nothing written before the 422
    assert "spec.replicas is 2, not 4" in line["message"], line
    assert ("get", 200) in [(r.verb, r.code) for r in requests]  # the re-read after the 422
    assert await processed_all(processor, ids)


async def test_a_victim_deleted_mid_drain_does_not_stop_restoring_the_users_own_cost(
    cluster: Cluster,
    api: Api,
    namespace: str,
    redis_url: str,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    ids, backlog = ids_of(3), ids_of(300, "backlog")
    node = NodeEmulator(api, namespace, tmp_path)
    async with Processor() as processor:
        processor.respond(*["hang"] * (len(ids) + len(backlog)))
        args = consumer_args(redis_url, "jobs", processor.url, "--concurrency=1")
        manifest = worker(namespace, "worker", args, replicas=3, grace_s=2, **_spec(3))
        template = manifest["spec"]["template"]["metadata"]
        template["annotations"] = {DELETION_COST: "5"}  # the user's own ranking

        async with controlled(
            cluster,
            api,
            node,
            redis_url,
            manifest,
            ready=3,
            before=pushing(redis_client, ids, processor),
        ) as controller:
            gone, kept = await eventually(lambda: marked(api, namespace, 2), 30, "2 victims")
            await api.delete(f"/api/v1/namespaces/{namespace}/pods/{gone}", grace_s=0)
            await redis_client.lpush("jobs", *backlog)  # the load rises: the drain is cancelled
            await eventually(
                lambda: _cancelled_for_load(controller), 30, "the drain cancelled", step_s=0.1
            )
            costs = await eventually(
                lambda: _all_costs(api, namespace, "5"), 10, "every cost back to 5"
            )
            assert kept in costs, costs
            processor.release()
            await eventually(
                lambda: processed_all(processor, ids + backlog), 60, "every message processed"
            )
    patches = [
        (r.name, r.code)
        for r in controller_requests(cluster, namespace)
        if r.resource == "pods" and r.verb == "patch"
    ]
    assert (gone, 404) in patches, patches  # restoring the deleted victim: 404, skipped
    assert (kept, 200) in patches, patches
    assert not events_of(controller, "drain restore failed"), controller.tail()


async def _not_ready(api: Api, namespace: str, pod: str) -> bool:
    return pod not in await ready_pods(api, namespace, "app=worker")


async def _n_live(api: Api, namespace: str, count: int) -> bool:
    return len(await live_pods(api, namespace)) == count


async def _started(controller: Proc) -> list[dict[str, object]]:
    return events_of(controller, "drain started")


async def _superseded(controller: Proc) -> dict[str, object] | None:
    for line in events_of(controller, "drain cancelled"):
        if "someone else" in str(line.get("message")):
            return line
    return None


async def _cancelled_for_load(controller: Proc) -> bool:
    lines = events_of(controller, "drain cancelled")
    return any(line.get("message") == "load rose during the drain" for line in lines)


async def _all_costs(api: Api, namespace: str, value: str) -> dict[str, str | None] | None:
    costs = await pod_costs(api, namespace)
    return costs if costs and all(c == value for c in costs.values()) else None
