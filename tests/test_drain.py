"""The drain protocol's pieces against real Redis and an in-memory target."""

from __future__ import annotations

import time

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from autoscaler.annotations import spec_with
from autoscaler.drain import Candidate, Drainer, pick_victims
from autoscaler.keys import Command, ConsumerField, ConsumerState, consumer_key
from autoscaler.metrics import ControllerMetrics
from autoscaler.policy import RedisTrigger
from autoscaler.redisqueue import ConsumerInfo, ConsumerKeys, heartbeat, set_command
from autoscaler.redisqueue.registry import Registration
from autoscaler.workload import ReplicaInfo, WorkloadRef
from tests.memtarget import MemoryTarget

SPEC = spec_with((RedisTrigger(("jobs",), 10),))


def info(cid: str, in_flight: int, *, alive: bool = True) -> ConsumerInfo:
    return ConsumerInfo(cid, alive, ConsumerState.RUNNING, None, in_flight, cid)


def test_victims_ranked_unscheduled_not_ready_no_consumer_idle_fewest_newest() -> None:
    def cand(
        name: str,
        created: float,
        *,
        ready: bool = True,
        scheduled: bool = True,
        consumer: ConsumerInfo | None = None,
    ) -> Candidate:
        replica = ReplicaInfo(name, ready, created, scheduled=scheduled)
        return Candidate(replica, ((None, consumer),) if consumer else ())

    candidates = [
        cand("busy-old", 1, consumer=info("busy-old", 3)),
        cand("busy-new", 2, consumer=info("busy-new", 3)),
        cand("light", 3, consumer=info("light", 1)),
        cand("idle", 4, consumer=info("idle", 0)),
        cand("dead-consumer", 5, consumer=info("dead-consumer", 2, alive=False)),
        cand("not-ready", 6, ready=False, consumer=info("not-ready", 1)),
        cand("pending", 7, scheduled=False),
    ]
    order = [c.replica.name for c in pick_victims(candidates, len(candidates))]
    assert order == [
        "pending",
        "not-ready",
        "dead-consumer",
        "idle",
        "light",
        "busy-new",
        "busy-old",
    ]


async def test_stale_drain_commands_are_released(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    """A controller that died mid-drain left consumers told to drain: a scale-up frees them."""
    target = MemoryTarget(WorkloadRef("default", "w"))
    await target.scale(2)
    for pod in target.pods:
        reg = Registration(ConsumerKeys("jobs", pod.name), pod.name, "token", 5, time.time())
        await heartbeat(redis_client, reg, ConsumerState.DRAINED, 0, 10_000)
    stale = target.pods[0].name
    await set_command(redis_client, stale, Command.DRAIN)
    await target.set_deletion_cost(stale, -(2**31))
    drainer = Drainer(lambda url: redis_client, ControllerMetrics(CollectorRegistry()))
    assert await drainer.release_stale(target, SPEC) == 1
    command = await redis_client.hget(consumer_key(stale), ConsumerField.COMMAND.value)
    assert command == b"run"
    assert target.costs[stale] is None
    assert await drainer.release_stale(target, SPEC) == 0
