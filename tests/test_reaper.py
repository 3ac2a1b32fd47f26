"""The reaper's one-round-trip read: only consumers without a lease come back, on plain and
Cluster-tagged queue names; the Reaper returns what exactly those held."""

from __future__ import annotations

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from autoscaler import keys, redisqueue
from autoscaler.drain import Reaper
from autoscaler.keys import ConsumerState
from autoscaler.metrics import ControllerMetrics

QUEUES = ["plain", "jobs:{orders}", "with space"]


async def _register(redis: aioredis.Redis, queue: str, cid: str, *, alive: bool) -> None:
    reg = redisqueue.Registration(redisqueue.ConsumerKeys(queue, cid), "pod", "token", 5, 0.0)
    await redisqueue.heartbeat(redis, reg, ConsumerState.RUNNING, 0, 60_000)
    if not alive:
        await redis.delete(keys.lease_key(cid, queue))


async def test_dead_consumers_are_exactly_those_without_a_lease(
    redis_client: aioredis.Redis,
) -> None:
    for queue in QUEUES:
        await _register(redis_client, queue, "live", alive=True)
        await _register(redis_client, queue, "gone", alive=False)
    found = await redisqueue.dead_consumers(redis_client, [*QUEUES, "unused"])
    assert sorted((i.queue, i.consumer_id, i.lease_alive) for i in found) == sorted(
        (q, "gone", False) for q in QUEUES
    )
    assert all(i.valid and i.max_deliveries == 5 for i in found)


async def test_reaper_returns_only_what_dead_consumers_held(
    redis_client: aioredis.Redis,
) -> None:
    for queue in QUEUES:
        await _register(redis_client, queue, "live", alive=True)
        await _register(redis_client, queue, "gone", alive=False)
        await redis_client.lpush(keys.processing_key(queue, "live"), b"busy")
        await redis_client.lpush(keys.processing_key(queue, "gone"), b"a", b"b")
    reaper = Reaper(lambda _: redis_client, ControllerMetrics(CollectorRegistry()))
    assert await reaper.reap(None, QUEUES) == 2 * len(QUEUES)
    for queue in QUEUES:
        back = await redis_client.lrange(queue, 0, -1)
        back += await redis_client.lrange(keys.quarantine_key(queue), 0, -1)
        assert sorted(back) == [b"a", b"b"]
        assert await redis_client.lrange(keys.processing_key(queue, "live"), 0, -1) == [b"busy"]
        assert [i.consumer_id for i in await redisqueue.read_registry(redis_client, queue)] == [
            "live"
        ]
    assert await reaper.reap(None, QUEUES) == 0  # forgotten: nothing found twice
