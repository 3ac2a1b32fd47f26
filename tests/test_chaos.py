"""Chaos: sidecars SIGKILLed about every second while the controller scales — nothing lost.

5,000 uniquely numbered messages; a processor with random latency and 5% HTTP 500s that
records every id it accepts; a kubelet that restarts a killed sidecar under the same pod
name; the controller scaling up and down with drains. Every id must reach the processor
at least once (or sit in the dead-letter list, reported); duplicates are counted.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.e2e import Kubelet, Proc, controller, deployment, eventually
from tests.e2e import fake_kube as fake_kube  # the fixture, RBAC-checked
from tests.fakekube import FakeKubeServer
from tests.processor import Processor

MESSAGES = 5_000


def consuming(proc: Proc) -> bool:
    """Started and taking messages: killing a sidecar still importing tests nothing (and
    on a loaded machine would keep every sidecar from ever starting)."""
    return proc.process.returncode is None and b'"consuming' in proc.log.read_bytes()


def replicas(kube: FakeKubeServer) -> int:
    obj = kube.get("deployments", "default", "worker")
    assert obj is not None
    return int(obj["spec"]["replicas"])


async def killer(k: Kubelet, rng: random.Random, kills: list[str]) -> None:
    while True:
        await asyncio.sleep(rng.uniform(0.5, 1.5))
        alive = [(pod, p) for pod, p in k.consumers.items() if consuming(p)]
        if alive:
            pod, proc = rng.choice(alive)
            proc.process.send_signal(signal.SIGKILL)
            kills.append(pod)


# How long it may take is bounded by the deadlines inside (and this timeout beyond them, so
# that a slow run fails with their logs), not asserted: the run's seconds are reported only.
@pytest.mark.timeout(300)
async def test_sigkilled_consumers_lose_nothing(
    fake_kube: FakeKubeServer, redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    started = time.monotonic()
    rng = random.Random(2026)
    fake_kube.create(deployment(
        "worker", 1, redis_list="jobs", messages_per_replica="400", polling_interval="500ms",
        scale_up_max_pods="100", scale_down_stabilization="1s", min_replicas="1",
        max_replicas="6", drain_timeout="10s",
    ))  # fmt: skip
    kills: list[str] = []
    stop_codes: list[int] = []
    async with Processor(latency_s=(0.002, 0.03), fail_ratio=0.05, seed=1) as processor:
        k = Kubelet(
            fake_kube,
            redis_url,
            "jobs",
            processor.url,
            tmp_path,
            "app=worker",
            "--concurrency",
            "8",
            "--drain-timeout",
            "5",
            "--request-timeout",
            "5",
        )
        assert fake_kube.kubeconfig is not None
        proc = await controller(tmp_path, fake_kube.kubeconfig, redis_url)
        try:
            async with k.running(redis_client):
                chaos = asyncio.create_task(killer(k, rng, kills), name="chaos")
                try:
                    ids = [json.dumps({"id": i}).encode() for i in range(MESSAGES)]
                    for start in range(0, MESSAGES, 500):
                        await redis_client.lpush("jobs", *ids[start : start + 500])

                    async def settled() -> bool:
                        dead = set(await redis_client.lrange("jobs:dead", 0, -1))
                        return set(processor.accepted) | dead >= set(ids)

                    await eventually(settled, 100, "every id processed or dead-lettered", (proc,))
                    chaos.cancel()
                    await eventually(lambda: replicas(fake_kube) == 1, 30, "back to min", (proc,))
                finally:
                    chaos.cancel()
                    await asyncio.gather(chaos, return_exceptions=True)
        finally:
            stop_codes = await k.stop()
            assert await proc.stop() == 0
    dead = set(await redis_client.lrange("jobs:dead", 0, -1))
    accepted = set(processor.accepted)
    lost = set(ids) - accepted - dead
    duplicates = len(processor.accepted) - len(accepted)
    print(
        f"chaos: {MESSAGES} messages, {len(kills)} SIGKILLs, {k.restarts} restarts, "
        f"{len(k.deleted)} pods drained away, lost {len(lost)}, duplicates {duplicates}, "
        f"dead-lettered {len(dead)}, {time.monotonic() - started:.1f}s, "
        f"{stop_codes.count(-9)} sidecars needed SIGKILL at the end"
    )
    for hung in k.hung:
        print(hung)
    assert not lost
    assert len(kills) >= 5 and k.restarts >= 1
