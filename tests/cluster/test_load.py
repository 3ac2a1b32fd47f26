"""Scenarios 2 and 10 on the real control plane: 3,000 unique messages through scale cycles.

2. Slow processors, replicas 10 → 2 → 8 → 1 (the owner lowers and raises ``max-replicas``;
   the emptied queue brings it to min): 0 lost, and every pod Kubernetes removed had
   drained first — its consumer's registry entry, read when its ``deletionTimestamp``
   appeared, said ``drained`` with nothing in flight — and no ``UndrainedPodRemoved``.
10. Chaos: the same cycles (10 → 3 → 8 → 1) while a sidecar is SIGKILLed every 1–2 s (the
   node restarts it, as a kubelet would): 0 lost, counted by id.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import redis.asyncio as aioredis

from tests.cluster.api import Api, eventually
from tests.cluster.conftest import Cluster
from tests.cluster.harness import (
    DrainWitness,
    annotate,
    consumer_args,
    controlled,
    events_of,
    ids_of,
    k8s_events,
    live_pods,
    processed_all,
    pushing,
    ready_pods,
    settled_at,
    spec_replicas,
    undrained_events,
    worker,
)
from tests.cluster.node import NodeEmulator
from tests.processor import Processor

MESSAGES = 3000


def _manifest(namespace: str, args: list[str]) -> dict[str, object]:
    return worker(
        namespace, "worker", args, replicas=1, grace_s=10, redis_list="jobs",
        messages_per_replica="50", min_replicas="1", max_replicas="10",
        polling_interval="1s", scale_down_stabilization="0s", drain="true",
        drain_timeout="20s",
    )  # fmt: skip


async def _cycle(api: Api, namespace: str, processor: Processor, ids: list[bytes],
                 steps: tuple[int, ...]) -> list[tuple[int, float]]:  # fmt: skip
    """Through ``steps`` of max-replicas (each held until that many pods are ready), then
    until every message is processed and the workload is back at min; returns
    (replicas, seconds) at each step."""
    started = time.monotonic()
    reached = []
    for replicas in steps:
        await annotate(api, namespace, "worker", max_replicas=str(replicas))
        await eventually(
            lambda n=replicas: _ready_at(api, namespace, n), 90, f"{replicas} pods", step_s=0.2
        )
        reached.append((replicas, round(time.monotonic() - started, 1)))
    await eventually(lambda: processed_all(processor, ids), 240, "every message", step_s=0.5)
    await eventually(lambda: settled_at(api, namespace, 1), 90, "back to 1 pod", step_s=0.2)
    reached.append((1, round(time.monotonic() - started, 1)))
    return reached


async def _ready_at(api: Api, namespace: str, replicas: int) -> bool:
    if await spec_replicas(api, namespace, "worker") != replicas:
        return False
    live = await live_pods(api, namespace)
    return len(live) == replicas and len(await ready_pods(api, namespace, "app=worker")) == replicas


async def test_3000_messages_through_10_2_8_1_none_lost_and_every_removed_pod_drained(
    cluster: Cluster,
    api: Api,
    namespace: str,
    redis_url: str,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    ids = ids_of(MESSAGES)
    witness = DrainWitness(redis_client, "jobs")
    node = NodeEmulator(api, namespace, tmp_path, on_terminating=witness.on_terminating)
    async with Processor(latency_s=(0.1, 0.5), seed=2) as processor:
        args = consumer_args(redis_url, "jobs", processor.url, "--concurrency=4")

        manifest = _manifest(namespace, args)
        async with controlled(
            cluster, api, node, redis_url, manifest, ready=1, before=pushing(redis_client, ids)
        ) as controller:
            reached = await _cycle(api, namespace, processor, ids, (10, 2, 8))
            events = await k8s_events(api, namespace, "worker")
            drains = len(events_of(controller, "drain acknowledged"))
    assert await processed_all(processor, ids)  # 0 lost
    removed = node.removed()
    assert len(removed) >= 8 + 7, removed  # 10 → 2, then 8 → 1
    assert set(removed) <= set(witness.seen)
    assert witness.undrained() == {}, witness.undrained()
    assert undrained_events(events) == []
    duplicates = len(processor.accepted) - len(set(processor.accepted))
    print(
        f"\n{MESSAGES} messages, 0 lost, {duplicates} delivered twice; steps (replicas, s): "
        f"{reached}; {len(removed)} pods removed, all drained first; {drains} drains"
    )


async def test_chaos_sigkill_a_sidecar_every_1_to_2_s_through_scale_cycles_loses_nothing(
    cluster: Cluster,
    api: Api,
    namespace: str,
    redis_url: str,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    ids = ids_of(MESSAGES)
    rng = random.Random(10)
    node = NodeEmulator(api, namespace, tmp_path)
    kills: list[str] = []

    async def chaos() -> None:
        while True:
            await asyncio.sleep(rng.uniform(1.0, 2.0))
            running = node.running()
            if running:
                victim = rng.choice(running)
                node.crash(victim)
                kills.append(victim)

    async with Processor(latency_s=(0.05, 0.3), seed=10) as processor:
        args = consumer_args(redis_url, "jobs", processor.url, "--concurrency=4")

        manifest = _manifest(namespace, args)
        async with controlled(
            cluster, api, node, redis_url, manifest, ready=1, before=pushing(redis_client, ids)
        ):
            killer = asyncio.create_task(chaos())
            try:
                reached = await _cycle(api, namespace, processor, ids, (10, 3, 8))
            finally:
                killer.cancel()
    assert await processed_all(processor, ids)  # 0 lost
    assert len(kills) >= 10, kills
    duplicates = len(processor.accepted) - len(set(processor.accepted))
    restarts = sum(1 for _, _, what in node.history if what.endswith("restarting"))
    print(
        f"\n{MESSAGES} messages, 0 lost, {duplicates} delivered twice, {len(kills)} sidecars "
        f"SIGKILLed ({restarts} restarts); steps (replicas, s): {reached}"
    )
