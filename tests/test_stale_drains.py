"""A new leader's check for drains a dead leader left unfinished: one batched read per Redis
server (``redisqueue.told_to_drain``), then a release for only the workloads that have a
consumer told to drain; in the background, so scale writes never wait for it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from autoscaler import keys, redisqueue
from autoscaler.drain import Drainer
from autoscaler.keys import Command, ConsumerField, ConsumerState
from autoscaler.metrics import ControllerMetrics
from autoscaler.redisqueue import ConsumerKeys, Registration
from tests.servers import RedisServer, start_redis
from tests.test_controller import Harness

QUEUES = ["plain", "jobs:{orders}", "with space", "line\nbreak"]


def _calls(url: str) -> dict[str, int]:
    """Commands the server ran so far, by name (INFO commandstats; inside scripts too)."""
    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()}


def _delta(before: dict[str, int], after: dict[str, int], name: str) -> int:
    return after.get(name, 0) - before.get(name, 0)


async def _register(redis_: aioredis.Redis, queue: str, cid: str, command: Command | None) -> None:
    reg = Registration(ConsumerKeys(queue, cid), cid, "token", 5, time.time())
    await redisqueue.heartbeat(redis_, reg, ConsumerState.RUNNING, 0, 60_000)
    if command is not None:
        await redisqueue.set_command(redis_, cid, command, queue)


async def test_told_to_drain_names_exactly_the_consumers_told_to_drain_in_one_round_trip(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    for queue in QUEUES:
        await _register(redis_client, queue, "told", Command.DRAIN)
        await _register(redis_client, queue, "running", Command.RUN)
        await _register(redis_client, queue, "fresh", None)  # never commanded
    many = [f"q{i}" for i in range(2_500)]  # three scripts of 1,000 queues
    async with redis_client.pipeline(transaction=False) as pipe:
        for queue in many:
            pipe.sadd(keys.consumers_key(queue), f"c-{queue}")
            pipe.hset(keys.consumer_key(f"c-{queue}", queue), ConsumerField.COMMAND.value, "run")
        await pipe.execute()
    await redisqueue.set_command(redis_client, "c-q2300", Command.DRAIN, "q2300")
    await redisqueue.told_to_drain(redis_client, ["warm"])  # the script loaded: EVALSHA below
    before = _calls(redis_url)
    found = await redisqueue.told_to_drain(redis_client, [*QUEUES, *many, "unused"])
    after = _calls(redis_url)
    assert sorted(found) == sorted([*((q, "told") for q in QUEUES), ("q2300", "c-q2300")])
    assert _delta(before, after, "evalsha") == 3  # one per 1,000 queues, one pipeline
    assert _delta(before, after, "smembers") == len(QUEUES) + len(many) + 1  # in the scripts
    assert _delta(before, after, "hgetall") == 0
    assert await redisqueue.told_to_drain(redis_client, []) == []


@pytest.fixture
def registry_server() -> Iterator[RedisServer]:
    """The consumers' registry on a server of its own: its command counts are the check's."""
    server = start_redis()
    yield server
    server.stop()


async def test_a_new_leader_releases_stale_drains_without_a_read_per_queue(
    redis_url: str, registry_server: RedisServer
) -> None:
    """200 workloads with a registered consumer each; one has two consumers a dead leader
    told to drain. The check reads the registry in one script call; only that workload's
    registry is read in full (HGETALL per consumer) and released."""
    registry = aioredis.Redis.from_url(registry_server.url)
    drainer = Drainer(lambda _url: registry, ControllerMetrics(CollectorRegistry()))
    h = Harness(redis_url, drainer=drainer)
    stale = h.add("w0", replicas=2, min_replicas="2", max_replicas="2", drain="true")
    for i in range(1, 200):
        ref = h.add(f"w{i}", replicas=1, min_replicas="1", max_replicas="1", drain="true")
        await _register(registry, ref.name, f"{ref.name}-pod", Command.RUN)
    target = h.targets[stale]
    await target.scale(2)
    for pod in target.pods:
        await _register(registry, "w0", pod.name, Command.DRAIN)
        await target.set_deletion_cost(pod.name, -(2**31))
    await redisqueue.told_to_drain(registry, ["warm"])  # scripts loaded: EVALSHA counts
    await redisqueue.set_command(registry, "nobody", Command.RUN)

    async def commands() -> list[bytes | None]:
        field = ConsumerField.COMMAND.value
        return [await registry.hget(keys.consumer_key(p.name, "w0"), field) for p in target.pods]

    before = _calls(registry_server.url)
    try:
        async with h.running():
            deadline = time.monotonic() + 10
            while await commands() != [b"run", b"run"]:
                assert time.monotonic() < deadline, await commands()
                await asyncio.sleep(0.02)
            assert all(cost is None for cost in target.costs.values())
    finally:
        await registry.aclose()
    after = _calls(registry_server.url)
    assert _delta(before, after, "hgetall") == 2  # w0's two consumers, no other workload's
    # the check's one script call, then w0's two commands (SET_IF_EXISTS)
    assert _delta(before, after, "evalsha") == 3
