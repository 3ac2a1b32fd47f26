"""Scale-in protection on the real control plane: with the queue empty the controller
scales a Deployment of three sidecar pods down to min, but removes only the unprotected
pod; it holds at two (``scale-down protected``) while the other two are protected, and
goes on once a protection is lifted — Kubernetes removing exactly the pod that was not.

The pods are protected through Redis exactly as their sidecars' ``PUT /protection`` does
(``redisqueue.protect``; the HTTP endpoint itself is tested in tests/test_protection.py:
three pods of one template cannot each get their own metrics port here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from autoscaler import redisqueue
from tests.cluster.api import Api, eventually
from tests.cluster.conftest import Cluster
from tests.cluster.harness import (
    consumer_args,
    controlled,
    events_of,
    live_pods,
    settled_at,
    worker,
)
from tests.cluster.node import NodeEmulator
from tests.processor import Processor


async def test_protected_pods_are_not_removed_until_their_protection_is_lifted(
    cluster: Cluster,
    api: Api,
    namespace: str,
    redis_url: str,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    node = NodeEmulator(api, namespace, tmp_path)
    async with Processor() as processor:
        args = consumer_args(redis_url, "jobs", processor.url)
        manifest = worker(namespace, "worker", args, replicas=3, grace_s=5, redis_list="jobs",
                          messages_per_replica="10", min_replicas="1", max_replicas="3",
                          polling_interval="1s", scale_down_stabilization="0s", drain="true",
                          drain_timeout="30s")  # fmt: skip

        async def protect_two() -> None:  # before the controller starts: no race
            pods = await live_pods(api, namespace)
            for pod in pods[:2]:
                await redisqueue.protect(redis_client, pod, 600, "jobs")
            protected.extend(pods[:2])
            unprotected.append(pods[2])

        protected: list[str] = []
        unprotected: list[str] = []
        async with controlled(cluster, api, node, redis_url, manifest, ready=3,
                              before=protect_two) as controller:  # fmt: skip
            await eventually(lambda: settled_at(api, namespace, 2), 60, "scaled to 2")
            assert await live_pods(api, namespace) == sorted(protected)

            async def said() -> list[dict[str, Any]]:
                return events_of(controller, "scale-down protected")

            await eventually(said, 10, "the controller says why it holds")
            [held, *_] = events_of(controller, "scale-down protected")
            assert held["reason"] == "ScaleDownProtected"
            assert held["protected"] == ",".join(sorted(protected)) and held["desired"] == 2
            assert await live_pods(api, namespace) == sorted(protected)  # still held at 2

            await redisqueue.protect(
                redis_client, protected[0], 0, "jobs"
            )  # lifted (enabled: false)
            await eventually(lambda: settled_at(api, namespace, 1), 60, "scaled to 1")
            assert await live_pods(api, namespace) == [protected[1]]
    assert node.removed() == [unprotected[0], protected[0]]  # in that order, nothing else
