"""The drain protocol end to end: controller process, fake API server, real sidecars, Redis."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from autoscaler.annotations import ANNOTATION_PREFIX
from tests.e2e import Kubelet, controller, deployment, eventually
from tests.e2e import fake_kube as fake_kube  # the fixture, RBAC-checked
from tests.fakekube import FakeKubeServer
from tests.processor import Processor

SPEC = {
    "redis_list": "jobs",
    "messages_per_replica": "5",
    "polling_interval": "500ms",
    "scale_up_max_pods": "100",
    "scale_down_stabilization": "0",
    "min_replicas": "1",
    "max_replicas": "8",
    "drain_timeout": "30s",
}


def replicas(kube: FakeKubeServer) -> int:
    obj = kube.get("deployments", "default", "worker")
    assert obj is not None
    return int(obj["spec"]["replicas"])


@pytest.fixture
async def kubelet(
    fake_kube: FakeKubeServer, redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> AsyncIterator[tuple[Kubelet, Processor]]:
    async with Processor(latency_s=(0.2, 0.6), seed=7) as processor:
        k = Kubelet(fake_kube, redis_url, "jobs", processor.url, tmp_path, "app=worker")
        try:
            async with k.running(redis_client):
                yield k, processor
        finally:
            codes = await k.stop()
        # 0: drained and exited; -SIGTERM: stopped before it had even installed its handler
        assert set(codes) <= {0, -15}, (codes, "\n".join(k.hung))


async def test_removed_pods_are_the_drained_ones_and_held_nothing(
    fake_kube: FakeKubeServer,
    kubelet: tuple[Kubelet, Processor],
    redis_url: str,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    k, processor = kubelet
    fake_kube.create(deployment("worker", 1, **SPEC))
    proc = await controller(tmp_path, fake_kube.kubeconfig, redis_url)
    try:
        messages = [json.dumps({"id": i}).encode() for i in range(120)]
        await redis_client.lpush("jobs", *messages)
        await eventually(lambda: replicas(fake_kube) == 8, 20, "scale up", (proc,))
        await eventually(lambda: replicas(fake_kube) == 1, 60, "scale down", (proc,))
        await eventually(
            lambda: set(processor.accepted) >= set(messages), 30, "all processed", (proc,)
        )
        drained = {
            victim
            for line in proc.lines()
            if line.get("event") == "drain started"
            for victim in str(line.get("victims", "")).split(",")
            if victim
        }
        assert k.deleted and set(k.deleted) <= drained
        assert all(n == 0 for n in k.held_at_deletion.values()), k.held_at_deletion
        assert not [e for e in fake_kube.events("default") if e["reason"] == "UndrainedPodRemoved"]
        assert await redis_client.llen("jobs") == 0
        assert await redis_client.llen("jobs:dead") == 0
    finally:
        assert await proc.stop() == 0


async def test_rising_backlog_cancels_the_drain(
    fake_kube: FakeKubeServer,
    kubelet: tuple[Kubelet, Processor],
    redis_url: str,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    k, processor = kubelet
    processor.respond(*["hang"] * 4)  # victims hold their message until released: the drain waits
    fake_kube.create(deployment("worker", 4, **{**SPEC, "messages_per_replica": "10"}))

    async def all_running() -> bool:
        states = [
            await redis_client.hget(f"queue-autoscaler:consumer:{pod}", "state")
            for pod in list(k.consumers)
        ]
        return len(states) == 4 and states == [b"running"] * 4

    await eventually(all_running, 30, "4 consumers running")
    await redis_client.lpush("jobs", *[b"slow-%d" % i for i in range(4)])

    async def all_busy() -> bool:
        held = [await redis_client.llen(f"jobs:processing:{pod}") for pod in list(k.consumers)]
        return held == [1, 1, 1, 1]

    await eventually(all_busy, 20, "every consumer holding a message")
    proc = await controller(tmp_path, fake_kube.kubeconfig, redis_url)
    try:
        await eventually(
            lambda: any(line.get("event") == "drain started" for line in proc.lines()),
            20,
            "drain started",
            (proc,),
        )
        await redis_client.lpush("jobs", *[b"more-%d" % i for i in range(60)])
        await eventually(
            lambda: any(line.get("event") == "drain cancelled" for line in proc.lines()),
            30,  # a deadline, not a bound: the victims hang until released, so nothing else ends it
            "cancelled",
            (proc,),
        )
        assert not k.deleted  # nothing was removed

        async def restored() -> bool:
            costs = [
                (pod["metadata"].get("annotations") or {}).get(
                    "controller.kubernetes.io/pod-deletion-cost"
                )
                for pod in fake_kube.list_pods("default", "app=worker")
            ]
            commands = [
                await redis_client.hget(f"queue-autoscaler:consumer:{pod}", "command")
                for pod in list(k.consumers)
            ]
            return set(costs) == {None} and set(commands) <= {b"run", None}

        await eventually(restored, 5, "victims restored", (proc,))
        await eventually(lambda: replicas(fake_kube) >= 7, 20, "scaled up instead", (proc,))
    finally:
        processor.release()
        assert await proc.stop() == 0
    assert ANNOTATION_PREFIX  # the spec keys used above are the documented ones
