"""The controller on a stream trigger, against a real redis-server: activation from zero on
one entry, sizing on lag + pending, and the drain protocol with stream sidecars."""

from __future__ import annotations

import contextlib
import time
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from autoscaler.annotations import ANNOTATION_PREFIX
from autoscaler.drain import Drainer, Reaper
from autoscaler.keys import ConsumerState, consumers_key, lease_key
from autoscaler.metrics import ControllerMetrics
from autoscaler.redisqueue import ConsumerKeys, heartbeat
from autoscaler.redisqueue.registry import Registration
from autoscaler.workload import WorkloadEvent, WorkloadRef
from tests.test_consumer import until
from tests.test_controller import Harness, wait_for
from tests.test_streams_consumer import ByBody, G, Running, S, consuming, serving, settled


def stream_workload(h: Harness, replicas: int, **extra: str) -> WorkloadRef:
    base = {
        "redis-stream": S,
        "redis-consumer-group": G,
        "messages-per-replica": "10",
        "polling-interval": "200ms",
        "scale-up-max-pods": "100",
        "scale-down-stabilization": "0",
        "cooldown": "0",
        "drain": "false",
        **{k.replace("_", "-"): v for k, v in extra.items()},
    }
    ref = WorkloadRef("default", "streamer")
    annotations = {ANNOTATION_PREFIX + k: v for k, v in base.items()}
    h.controller.apply(WorkloadEvent(ref, annotations, replicas))
    h.targets[ref].replica_count = replicas
    return ref


async def test_activation_zero_then_lag_plus_pending_then_back_to_zero(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    h = Harness(redis_url)
    ref = stream_workload(h, 0, activation_messages="0", min_replicas="0", max_replicas="20")
    async with h.running():
        await wait_for(lambda: h.controller.cycles > 1)
        assert h.replicas(ref) == 0  # no stream yet: idle, not unknown
        await redis_client.xgroup_create(S, G, id="0", mkstream=True)
        await redis_client.xadd(S, {"body": "first"})
        await wait_for(lambda: h.replicas(ref) == 1)  # activation 0: one entry activates
        for i in range(74):
            await redis_client.xadd(S, {"body": f"m{i}"})
        delivered: Any = await redis_client.xreadgroup(G, "c1", {S: ">"}, count=30)
        await wait_for(lambda: h.replicas(ref) == 8)  # 45 lag + 30 pending at 10 each
        assert "redis-stream:events 75 / 10 per replica → 8" in h.targets[ref].events[-1][1]
        ids: list[bytes] = [entry_id for entry_id, _ in delivered[0][1]]
        await redis_client.xack(S, G, *ids)
        await redis_client.xtrim(S, maxlen=0)  # acked and trimmed: lag NULL-free 0
        await redis_client.xgroup_setid(S, G, "$")
        await wait_for(lambda: h.replicas(ref) == 0)


async def test_the_controllers_drain_drains_stream_sidecars_and_loses_nothing(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    """Three replicas, each pod a stream sidecar; the load goes: the controller drains two
    of them (they stop taking, hand back, report drained) and only then scales to one."""
    drainer = Drainer(lambda url: redis_client, ControllerMetrics(CollectorRegistry()))
    h = Harness(redis_url, drainer=drainer)
    ref = stream_workload(h, 3, min_replicas="1", max_replicas="3", drain="true",
                          drain_timeout="10s", polling_interval="100ms")  # fmt: skip
    target = h.targets[ref]
    await target.scale(3)
    ids: list[Any] = [await redis_client.xadd(S, {"body": f"m{i}"}) for i in range(30)]
    proc = ByBody()
    async with serving(proc), contextlib.AsyncExitStack() as stack:
        sidecars: dict[str, Running] = {}
        for pod in target.pods:
            sidecars[pod.name] = await stack.enter_async_context(
                consuming(redis_client, proc.url, pod.name, min_idle_s=5)
            )
        await until(settled(proc, redis_client, 30), "30 entries acked", timeout_s=10)
        async with h.running():
            await wait_for(lambda: h.replicas(ref) == 1, 10)
        left = {p.name for p in target.pods}
        drained = {n for n, r in sidecars.items() if r.worker.state is ConsumerState.DRAINED}
        assert len(left) == 1 and drained == set(sidecars) - left
    assert sorted(proc.accepted) == sorted(i.decode() for i in ids)


async def test_the_reaper_unregisters_a_dead_stream_consumer_and_leaves_its_entries(
    redis_client: aioredis.Redis,
) -> None:
    """A stream sidecar that died: the reaper drops it from the registry (so reads and
    drains stop visiting it) and touches neither the stream nor the group's pending list;
    the live consumers claim its entries."""
    await redis_client.xgroup_create(S, G, id="0", mkstream=True)
    await redis_client.xadd(S, {"body": "held"})
    await redis_client.xreadgroup(G, "gone", {S: ">"}, count=1)
    reg = Registration(ConsumerKeys(S, "gone"), "gone", "token", 5, time.time())
    await heartbeat(redis_client, reg, ConsumerState.RUNNING, 1, 1)  # a 1 ms lease
    await until(lambda: _expired(redis_client), "the lease expired")
    reaper = Reaper(lambda url: redis_client, ControllerMetrics(CollectorRegistry()))
    assert await reaper.reap(None, [S]) == 0
    assert await redis_client.smembers(consumers_key(S)) == set()
    summary: Any = await redis_client.xpending(S, G)
    assert summary["pending"] == 1 and await redis_client.xlen(S) == 1


async def _expired(redis: aioredis.Redis) -> bool:
    return not await redis.exists(lease_key("gone"))
