"""The controller warns about a queue Redis that can lose messages: real redis-server,
its settings changed with CONFIG SET while the loop runs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from autoscaler.annotations import ANNOTATION_PREFIX
from autoscaler.controller import Controller, DurabilityWatch
from autoscaler.controller.periodic import ServerWatch
from autoscaler.metrics import ControllerMetrics
from autoscaler.sources import SourcePool
from autoscaler.workload import WorkloadEvent, WorkloadRef
from tests.memtarget import MemoryTarget
from tests.servers import RedisServer

REF = WorkloadRef("default", "jobs")


async def wait_for(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        await asyncio.sleep(0.02)


class Rig:
    """A controller with one workload on ``own_redis`` and a durability watch."""

    def __init__(self, url: str, interval_s: float = 300.0) -> None:
        self.registry = CollectorRegistry()
        metrics = ControllerMetrics(self.registry)
        self.pool = SourcePool(redis_url=url)
        self.target = MemoryTarget(REF)
        self.watch = DurabilityWatch(self.pool.redis_client, metrics, interval_s=interval_s)
        self.controller = Controller(
            sources=self.pool,
            target_factory=lambda ref: self.target,
            metrics=metrics,
            durability=self.watch,
        )
        spec = {"redis-list": "jobs", "messages-per-replica": "10", "polling-interval": "1s"}
        annotations = {ANNOTATION_PREFIX + k: v for k, v in spec.items()}
        self.controller.apply(WorkloadEvent(REF, annotations, 1))

    def risk(self, name: str) -> float | None:
        labels = {"namespace": "default", "workload": "jobs", "risk": name}
        return self.registry.get_sample_value("queue_autoscaler_redis_durability_risk", labels)

    def warned(self) -> list[str]:
        return [m for reason, m, _ in self.target.events if reason == "RedisDurabilityRisk"]


async def test_the_controller_warns_at_start_about_a_redis_that_can_lose_messages(
    own_redis: RedisServer,
) -> None:
    """The test server runs with neither AOF nor RDB; given an eviction policy too, the
    running controller reports both: a gauge per risk and a Warning Event on the workload."""
    client = aioredis.Redis.from_url(own_redis.url)
    await client.config_set("maxmemory-policy", "allkeys-lru")
    rig = Rig(own_redis.url)
    task = asyncio.create_task(rig.controller.run(), name="controller")
    try:
        await wait_for(lambda: len(rig.warned()) == 2)
        eviction, persistence = rig.warned()  # by risk name
        assert "allkeys-lru" in eviction and "neither AOF nor RDB" in persistence
        assert rig.risk("no_persistence") == 1 and rig.risk("eviction") == 1
        assert all(warning for reason, _, warning in rig.target.events
                   if reason == "RedisDurabilityRisk")  # fmt: skip
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await rig.pool.aclose()
        await client.aclose()


async def test_each_risk_is_told_once_per_change(own_redis: RedisServer) -> None:
    """Rounds that see the same risks tell nothing new; a fixed server sets the gauges to
    0; a risk that comes back is told again."""
    client = aioredis.Redis.from_url(own_redis.url)
    rig = Rig(own_redis.url)
    told: list[tuple[str, str]] = []
    workloads = list(rig.controller.workloads.values())
    try:
        for _ in range(3):
            await rig.watch.check(workloads, lambda w, reason, m: told.append((reason, m)))
        assert [r for r, _ in told] == ["RedisDurabilityRisk"]
        assert rig.risk("no_persistence") == 1 and rig.risk("eviction") == 0
        await client.config_set("appendonly", "yes")
        await rig.watch.check(workloads, lambda w, reason, m: told.append((reason, m)))
        assert rig.risk("no_persistence") == 0 and len(told) == 1
        await client.config_set("appendonly", "no")
        await rig.watch.check(workloads, lambda w, reason, m: told.append((reason, m)))
        assert rig.risk("no_persistence") == 1 and len(told) == 2
    finally:
        await rig.pool.aclose()
        await client.aclose()


async def test_a_rounds_reports_let_the_other_tasks_in() -> None:
    """Each workload's report (its series; a warning and an Event when at risk) is
    synchronous; a round at 10,000 workloads held the event loop 160-270 ms in one piece.
    Here 200 reports of 1 ms each: other tasks run between them."""
    ran_between: list[int] = []
    reported: list[int] = []

    def report(w: object) -> None:
        reported.append(1)
        until = time.perf_counter() + 0.001
        while time.perf_counter() < until:
            pass

    async def other() -> None:
        while True:
            ran_between.append(len(reported))
            await asyncio.sleep(0)

    task = asyncio.create_task(other())
    await asyncio.sleep(0)  # it runs once before the round
    await ServerWatch.each([object()] * 200, report)  # type: ignore[list-item]
    task.cancel()
    assert len(reported) == 200
    assert [n for n in ran_between if 0 < n < 200], ran_between  # in the middle of the round
