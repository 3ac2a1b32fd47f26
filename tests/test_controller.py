"""The loop against real Redis and in-memory targets: sizing, bad specs, outages."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from autoscaler.annotations import ANNOTATION_PREFIX
from autoscaler.controller import Controller
from autoscaler.drain import Drainer
from autoscaler.keys import Command, ConsumerField, ConsumerState, consumer_key, quarantine_key
from autoscaler.metrics import ControllerMetrics
from autoscaler.redisqueue import ConsumerKeys, heartbeat, set_command
from autoscaler.redisqueue.registry import Registration
from autoscaler.sources import SourcePool
from autoscaler.workload import WorkloadEvent, WorkloadRef
from tests.memtarget import MemoryTarget
from tests.servers import RedisServer


def spec_annotations(queue: str, **extra: str) -> dict[str, str]:
    base = {
        "redis-list": queue,
        "messages-per-replica": "50",
        "polling-interval": "200ms",
        "scale-up-max-pods": "100",
        "scale-down-stabilization": "0",
        "cooldown": "0",
        "drain": "false",
    }
    base.update({k.replace("_", "-"): v for k, v in extra.items()})
    return {ANNOTATION_PREFIX + k: v for k, v in base.items()}


async def wait_for(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.02)


class ManualClock:
    """The controller's clock in tests that run cycles by hand: time moves on ``advance``."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Harness:
    """A controller over in-memory targets; ``options`` go to ``Controller`` as they are
    (``clock``, ``is_leader``, ``drainer``, ``dry_run``): its public seams."""

    def __init__(self, redis_url: str, **options: Any) -> None:
        self.targets: dict[WorkloadRef, MemoryTarget] = {}
        self.scaled_at: dict[WorkloadRef, int] = {}  # the controller's cycles at the last scale
        self.registry = CollectorRegistry()
        self.pool = SourcePool(redis_url=redis_url)
        self.controller = Controller(
            sources=self.pool,
            target_factory=self._target,
            metrics=ControllerMetrics(self.registry),
            **options,
        )

    def _target(self, ref: WorkloadRef) -> MemoryTarget:
        def scaled(replicas: int) -> None:
            self.scaled_at[ref] = self.controller.cycles

        return self.targets.setdefault(ref, MemoryTarget(ref, on_scale=scaled))

    def add(self, name: str, replicas: int = 0, **extra: str) -> WorkloadRef:
        ref = WorkloadRef("default", name)
        self.controller.apply(WorkloadEvent(ref, spec_annotations(name, **extra), replicas))
        self.targets[ref].replica_count = replicas
        return ref

    def replicas(self, ref: WorkloadRef) -> int:
        return self.targets[ref].replica_count

    def target_cycle(self, ref: WorkloadRef) -> int:
        """The controller's cycle count when ``ref`` was last scaled."""
        return self.scaled_at[ref]

    def running(self) -> contextlib.AbstractAsyncContextManager[None]:
        return running(self.controller, self.pool)


@contextlib.asynccontextmanager
async def running(controller: Controller, pool: SourcePool) -> AsyncIterator[None]:
    """The controller's loop for the block; then it is stopped and the pool closed."""
    task = asyncio.create_task(controller.run(), name="controller")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pool.aclose()


@pytest.fixture
async def harness(redis_url: str) -> AsyncIterator[Harness]:
    h = Harness(redis_url)
    async with h.running():
        yield h


async def test_backlog_scales_within_one_interval_then_back_to_min(
    harness: Harness, redis_client: aioredis.Redis
) -> None:
    ref = harness.add("jobs", replicas=1, min_replicas="1")
    await wait_for(lambda: harness.controller.cycles > 0)
    await redis_client.lpush("jobs", *[f"m{i}" for i in range(500)])
    pushed_at = harness.controller.cycles
    await wait_for(lambda: harness.replicas(ref) == 10)
    # Acted on within one polling interval: the next cycle after the push decided it (the
    # one running during the push may have read the queue before it).
    assert harness.target_cycle(ref) <= pushed_at + 2
    target = harness.targets[ref]
    assert ("ScaleUp", "scaled up to 10: redis:jobs 500 / 50 per replica → 10", False) in (
        target.events
    )
    assert target.statuses[-1]["desired"] == 10
    await redis_client.delete("jobs")
    await wait_for(lambda: harness.replicas(ref) == 1)
    assert target.statuses[-1]["reason"] == "TooFewReplicas"
    assert (
        harness.registry.get_sample_value(
            "queue_autoscaler_scale_events_total",
            {"namespace": "default", "workload": "jobs", "direction": "down"},
        )
        == 1
    )


async def test_quarantined_messages_keep_a_workload_from_scaling_to_zero(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    """min-replicas 0, the queue empty, one message in its quarantine: that message waits
    for a consumer, so the workload keeps one; once the quarantine is empty it goes to 0."""
    clock = ManualClock()
    h = Harness(redis_url, clock=clock)
    ref = h.add("held", replicas=1, min_replicas="0")
    await redis_client.rpush(quarantine_key("held"), "suspect")
    try:
        for _ in range(5):
            clock.advance(1.0)
            await h.controller.cycle()
            decision = h.controller.workloads[ref].last_decision
            assert decision is not None and decision.replicas == 1, decision
        assert h.replicas(ref) == 1 and h.targets[ref].scales == []
        await redis_client.delete(quarantine_key("held"))
        deadline = time.monotonic() + 5
        while h.replicas(ref) != 0:
            assert time.monotonic() < deadline, "not scaled to zero with nothing waiting"
            clock.advance(1.0)
            await h.controller.cycle()
            await asyncio.sleep(0.02)
    finally:
        await h.controller.aclose()
        await h.pool.aclose()


async def test_invalid_spec_is_reported_and_others_still_scale(
    harness: Harness, redis_client: aioredis.Redis
) -> None:
    bad = harness.add("bad", replicas=2, max_replicas="zero")
    good = harness.add("good", replicas=1)
    await redis_client.lpush("bad", *["x"] * 200)
    await redis_client.lpush("good", *["x"] * 200)
    await wait_for(lambda: harness.replicas(good) == 4)
    assert harness.replicas(bad) == 2
    assert harness.targets[bad].scales == []
    [(reason, message, warning)] = harness.targets[bad].events
    assert reason == "InvalidSpec" and warning
    assert ANNOTATION_PREFIX + "max-replicas" in message and "'zero'" in message
    assert (
        harness.registry.get_sample_value(
            "queue_autoscaler_spec_valid", {"namespace": "default", "workload": "bad"}
        )
        == 0
    )


async def test_redis_down_holds_replicas_and_recovers(own_redis: RedisServer) -> None:
    h = Harness(own_redis.url)
    client = aioredis.Redis.from_url(own_redis.url)
    try:
        async with h.running():
            ref = h.add("jobs", replicas=1)
            await client.lpush("jobs", *["x"] * 300)
            await wait_for(lambda: h.replicas(ref) == 6)
            own_redis.stop()
            errors = {"namespace": "default", "workload": "jobs", "trigger": "redis:jobs"}
            source_errors = "queue_autoscaler_source_errors_total"
            await wait_for(lambda: (h.registry.get_sample_value(source_errors, errors) or 0) >= 3)
            assert h.replicas(ref) == 6  # held: an outage is not an empty queue
            last = h.controller.workloads[ref].last_decision
            assert last is not None and last.reason == "MetricError"
            own_redis.restart()
            await client.aclose()
            client = aioredis.Redis.from_url(own_redis.url)
            await client.lpush("jobs", *["x"] * 100)  # the restarted server is empty
            await wait_for(lambda: h.replicas(ref) == 2, timeout_s=15)
    finally:
        await client.aclose()


async def test_dry_run_decides_but_writes_nothing(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    h = Harness(redis_url, dry_run=True)
    ref = h.add("jobs", replicas=1)
    await redis_client.lpush("jobs", *["x"] * 500)
    assert await h.controller.cycle() == 1
    decision = h.controller.workloads[ref].last_decision
    assert decision is not None and decision.replicas == 10
    assert h.targets[ref].scales == [] and h.targets[ref].statuses == []
    await h.controller.aclose()
    await h.pool.aclose()


async def test_one_read_per_cycle_for_many_workloads(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    clock = ManualClock()
    h = Harness(redis_url, clock=clock)
    for i in range(50):
        h.add(f"q{i}", replicas=1)

    async def script_calls() -> int:
        stats = await redis_client.info("commandstats")
        return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in ("evalsha", "eval"))

    await h.controller.cycle()  # loads the script (EVALSHA → NOSCRIPT → EVAL)
    clock.advance(1.0)  # every workload due again (polling-interval 200ms)
    before = await script_calls()
    assert await h.controller.cycle() == 50
    assert await script_calls() - before == 1  # fifty workloads, one round trip
    await h.controller.aclose()
    await h.pool.aclose()


async def test_a_new_leader_puts_back_to_work_consumers_a_dead_leader_left_draining(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    """A leader SIGKILLed mid-drain leaves victims idle; a steady workload never scales, so
    only the check a controller makes when it starts leading brings them back."""
    leading = False
    polls = 0
    polled_thrice = asyncio.Event()

    def is_leader() -> bool:
        nonlocal polls
        polls += 1
        if polls >= 3:
            polled_thrice.set()
        return leading

    drainer = Drainer(lambda url: redis_client, ControllerMetrics(CollectorRegistry()))
    h = Harness(redis_url, is_leader=is_leader, drainer=drainer)
    ref = h.add("jobs", replicas=2, min_replicas="2", max_replicas="2", drain="true")
    target = h.targets[ref]
    await target.scale(2)
    for pod in target.pods:
        reg = Registration(ConsumerKeys("jobs", pod.name), pod.name, "token", 5, time.time())
        await heartbeat(redis_client, reg, ConsumerState.DRAINED, 0, 60_000)
        await set_command(redis_client, pod.name, Command.DRAIN)
        await target.set_deletion_cost(pod.name, -(2**31))

    async def commands() -> list[bytes | str | None]:
        field = ConsumerField.COMMAND.value
        return [await redis_client.hget(consumer_key(p.name), field) for p in target.pods]

    async with h.running():
        await asyncio.wait_for(polled_thrice.wait(), 5)  # a standby touches nothing
        assert await commands() == [b"drain", b"drain"]
        leading = True
        deadline = time.monotonic() + 5
        while await commands() != [b"run", b"run"]:
            assert time.monotonic() < deadline, await commands()
            await asyncio.sleep(0.02)
        assert all(cost is None for cost in target.costs.values())
        assert target.scales == [2]  # released without scaling


async def test_steady_cycles_are_counted_and_a_changed_queue_is_decided(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    """Steady workloads skip the policy, yet every cycle counts one decision each; the
    one whose queue moved is decided in full, in the same cycle."""
    clock = ManualClock()
    h = Harness(redis_url, clock=clock)
    refs = [h.add(f"s{i}", replicas=1, min_replicas="1") for i in range(3)]
    await redis_client.lpush("s0", *["x"] * 500)  # → 10 replicas, then steady at 10
    await h.controller.cycle()
    await wait_for(lambda: not h.controller.workloads[refs[0]].busy)  # scaled to 10

    def decisions(ref: WorkloadRef, reason: str) -> float | None:
        labels = {"namespace": "default", "workload": ref.name, "reason": reason}
        return h.registry.get_sample_value("queue_autoscaler_decisions_total", labels)

    for _ in range(4):
        clock.advance(1.0)
        assert await h.controller.cycle() == 3
    assert decisions(refs[0], "ScaleUp") == 1
    assert decisions(refs[0], "DesiredWithinRange") == 4
    assert [decisions(r, "TooFewReplicas") for r in refs[1:]] == [5, 5]
    assert all(h.controller.workloads[r].skipped_at is not None for r in refs[1:])
    await redis_client.lpush("s1", *["x"] * 200)
    clock.advance(1.0)
    await h.controller.cycle()
    assert h.controller.workloads[refs[1]].last_decision.replicas == 4  # type: ignore[union-attr]
    assert decisions(refs[1], "ScaleUp") == 1 and decisions(refs[1], "TooFewReplicas") == 5
    assert decisions(refs[2], "TooFewReplicas") == 6
    await h.controller.aclose()
    await h.pool.aclose()


async def test_a_moving_cycle_sets_off_no_garbage_collection(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    """A queue that moved gets a new reading while its workload still holds the last one
    (freed when the loop reaches it): ~1 object a workload alive until the loop ends. The
    first cycle sizes the young generation above that, so a cycle of 2,000 moved queues,
    all held by their bands, sets off no collection once they have moved before (Python's
    default young generation, 700 objects, was collected 13-14 times such a cycle at
    10,000)."""
    n, clock = 2000, ManualClock()
    h = Harness(redis_url, clock=clock)
    refs = [h.add(f"m{i}", replicas=2, min_replicas="1") for i in range(n)]

    async def push(count: int) -> None:
        async with redis_client.pipeline(transaction=False) as pipe:
            for i in range(n):
                pipe.lpush(f"m{i}", *["x"] * count)
            await pipe.execute()

    collections: list[int] = []

    def counted(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collections.append(info["generation"])

    threshold = gc.get_threshold()
    try:
        await push(60)  # 2 replicas of 50: within (50, 100] the decision cannot change
        assert await h.controller.cycle() == n
        await wait_for(lambda: all(h.targets[r].statuses for r in refs))
        for _ in range(2):  # 61, 62: from the second on, a cycle frees what it builds
            await push(1)
            clock.advance(1.0)
            assert await h.controller.cycle() == n
        await push(1)
        clock.advance(1.0)
        gc.collect()
        gc.callbacks.append(counted)
        try:
            assert await h.controller.cycle() == n
        finally:
            gc.callbacks.remove(counted)
        assert all(h.controller.workloads[r].skipped_at == clock.now for r in refs)  # held
        assert collections == []
    finally:
        gc.set_threshold(*threshold)
        await h.controller.aclose()
        await h.pool.aclose()


async def test_a_standby_elected_decides_its_first_cycle_without_the_collector(
    redis_url: str,
) -> None:
    """While it stands by the collector runs; elected, its first cycle decides the whole
    inventory as a start's does, over a heap no cycle has frozen yet, and no collection
    runs until it has."""
    leading, asked = False, list[bool]()

    def is_leader() -> bool:
        asked.append(leading)
        return leading

    h = Harness(redis_url, is_leader=is_leader)
    for i in range(2000):
        h.add(f"s{i}", replicas=1, min_replicas="1")
    collections: list[int] = []

    def counted(phase: str, info: dict[str, int]) -> None:
        if phase == "start" and leading and not h.controller.cycles:
            collections.append(info["generation"])

    gc.callbacks.append(counted)
    try:
        async with h.running():
            await wait_for(lambda: len(asked) >= 2)  # standing by, asked again
            assert gc.isenabled()  # standing by: the collector runs
            gc.collect()  # from nought: the idle loop before the cycle allocates little
            leading = True
            await wait_for(lambda: h.controller.cycles >= 1, timeout_s=30)
    finally:
        gc.callbacks.remove(counted)
    assert collections == []


async def test_a_queue_moving_within_its_band_is_counted_shown_and_not_rewritten(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    """At 2 replicas of 50 messages, a backlog moving within (50, 100] cannot change the
    decision (policy.band): each cycle counts it and the gauges show the new backlog, but
    no status is written; past the band the same cycle decides in full."""
    clock = ManualClock()
    h = Harness(redis_url, clock=clock)
    ref = h.add("b0", replicas=2, min_replicas="1")
    await redis_client.lpush("b0", *["x"] * 60)
    await h.controller.cycle()
    await wait_for(lambda: bool(h.targets[ref].statuses))
    written = len(h.targets[ref].statuses)

    def sample(name: str, **labels: str) -> float | None:
        labels = {"namespace": "default", "workload": "b0", **labels}
        return h.registry.get_sample_value(name, labels)

    for backlog in (70, 99, 51, 100):
        await redis_client.delete("b0")
        await redis_client.lpush("b0", *["x"] * backlog)
        clock.advance(1.0)
        assert await h.controller.cycle() == 1
        assert h.controller.workloads[ref].skipped_at == clock.now  # held, not decided
        assert sample("queue_autoscaler_backlog", trigger="redis:b0") == backlog
        assert not h.controller.statuses.pending and len(h.targets[ref].statuses) == written
    assert sample("queue_autoscaler_decisions_total", reason="DesiredWithinRange") == 5
    await redis_client.lpush("b0", *["x"] * 20)  # 120: 3 replicas
    clock.advance(1.0)
    await h.controller.cycle()
    assert h.controller.workloads[ref].skipped_at is None
    assert sample("queue_autoscaler_decisions_total", reason="ScaleUp") == 1
    await wait_for(lambda: h.replicas(ref) == 3)
    await h.controller.aclose()
    await h.pool.aclose()
