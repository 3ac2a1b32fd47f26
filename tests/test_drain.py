"""The drain protocol's pieces against real Redis and an in-memory target."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from autoscaler.annotations import spec_with
from autoscaler.drain import Candidate, Drainer, pick_victims, removal_order, rollout_owners
from autoscaler.keys import Command, ConsumerField, ConsumerState, consumer_key
from autoscaler.metrics import ControllerMetrics
from autoscaler.policy import RedisTrigger
from autoscaler.redisqueue import ConsumerInfo, ConsumerKeys, heartbeat, protect, set_command
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


def test_statefulset_victims_are_the_highest_ordinals_down_to_a_protected_one() -> None:
    def cand(ordinal: int, *, ready: bool = True, protected: bool = False) -> Candidate:
        replica = ReplicaInfo(f"db-{ordinal}", ready, float(ordinal), ordinal=ordinal)
        consumer = replace(info(f"db-{ordinal}", 0), protected_ms=1000 if protected else 0)
        return Candidate(replica, ((None, consumer),))

    # Not-ready db-0 and idle ones do not matter: a StatefulSet removes from the top.
    candidates = [cand(0, ready=False), cand(1), cand(2), cand(3)]
    assert [c.replica.name for c in pick_victims(candidates, 2)] == ["db-3", "db-2"]
    protected = [cand(0), cand(1), cand(2, protected=True), cand(3)]
    assert [c.replica.name for c in pick_victims(protected, 3)] == ["db-3"]


def test_removal_order_puts_readiness_before_cost_and_rollouts_show_two_owners() -> None:
    lowest = -(2**31)
    victim = ReplicaInfo("victim", True, 1.0, deletion_cost=lowest, owner="rs-a")
    not_ready = ReplicaInfo("turned-not-ready", False, 2.0, owner="rs-a")
    pending = ReplicaInfo("pending", False, 3.0, running=False, owner="rs-a")
    user_cost = ReplicaInfo("user", True, 4.0, deletion_cost=-5, owner="rs-a")
    order = [r.name for r in removal_order([user_cost, victim, not_ready, pending])]
    assert order == ["pending", "turned-not-ready", "victim", "user"]
    assert rollout_owners([victim, not_ready]) == []
    assert rollout_owners([victim, replace(user_cost, owner="rs-b")]) == ["rs-a", "rs-b"]
    sts = [ReplicaInfo(f"db-{i}", True, 0.0, owner="db", ordinal=i) for i in range(3)]
    assert [r.name for r in removal_order(sts)] == ["db-2", "db-1", "db-0"]


async def test_scale_down_is_held_while_two_replica_sets_have_pods(
    redis_client: aioredis.Redis,
) -> None:
    target = MemoryTarget(WorkloadRef("default", "w"), replica_count=3)
    target.pods = [ReplicaInfo(f"w-{i}", True, float(i), owner=f"rs-{i % 2}") for i in range(3)]
    drainer = Drainer(lambda url: redis_client, ControllerMetrics(CollectorRegistry()))
    assert await drainer.scale_down(target, SPEC, 3, 1, _never) == 3
    assert target.scales == [] and target.costs == {}
    [(reason, message, warning)] = target.events
    assert (reason, warning) == ("ScaleDownHeld", False)
    assert "rs-0, rs-1" in message


async def test_a_scale_made_meanwhile_stands_and_the_users_cost_comes_back(
    redis_client: aioredis.Redis,
) -> None:
    target = MemoryTarget(WorkloadRef("default", "w"), replica_count=3)
    target.pods = [ReplicaInfo(f"w-{i}", True, float(i), deletion_cost=7) for i in range(3)]
    drainer = Drainer(lambda url: redis_client, ControllerMetrics(CollectorRegistry()))
    target.replica_count = 5  # `kubectl scale --replicas=5` after the controller read 3
    assert await drainer.scale_down(target, SPEC, 3, 1, _never) == 5
    assert target.scales == []  # the conditional write was refused: nothing overwritten
    assert set(target.costs.values()) == {7}  # put back exactly, not deleted
    assert len(target.costs) == 2


async def _never() -> int | None:
    return None


async def test_a_protected_pod_that_is_not_ready_holds_the_scale_down(
    redis_client: aioredis.Redis,
) -> None:
    """The ReplicaSet would remove a not-ready pod before any victim marked −2³¹: when that
    pod is protected, no drain starts (it would only be cancelled, again and again)."""
    target = MemoryTarget(WorkloadRef("default", "w"), replica_count=3)
    target.pods = [ReplicaInfo(f"w-{i}", i != 0, float(i)) for i in range(3)]
    reg = Registration(ConsumerKeys("jobs", "w-0"), "w-0", "token", 5, time.time())
    await heartbeat(redis_client, reg, ConsumerState.RUNNING, 0, 10_000)
    assert await protect(redis_client, "w-0", 60, "jobs")
    drainer = Drainer(lambda url: redis_client, ControllerMetrics(CollectorRegistry()))
    assert await drainer.scale_down(target, SPEC, 3, 2, _never) == 3
    assert target.scales == [] and target.costs == {}


async def test_a_victim_whose_consumer_registers_during_the_drain_is_not_removed_undrained(
    redis_client: aioredis.Redis,
) -> None:
    """A pod just started (its sidecar not registered yet) is the cheapest victim; when its
    consumer registers after the pick it was told nothing and is not drained: the drain is
    cancelled rather than /scale written (seen on the real control plane after a rollout)."""

    @dataclass
    class SidecarStarting(MemoryTarget):  # the sidecar registers as the victim is marked
        async def set_deletion_cost(self, name: str, cost: int | None) -> None:
            await super().set_deletion_cost(name, cost)
            reg = Registration(ConsumerKeys("jobs", name), name, "token", 5, time.time())
            await heartbeat(redis_client, reg, ConsumerState.RUNNING, 0, 10_000)

    target = SidecarStarting(WorkloadRef("default", "w"), replica_count=2)
    target.pods = [ReplicaInfo(f"w-{i}", True, float(i)) for i in range(2)]
    reg = Registration(ConsumerKeys("jobs", "w-0"), "w-0", "token", 5, time.time())
    await heartbeat(redis_client, reg, ConsumerState.RUNNING, 0, 10_000)
    drainer = Drainer(lambda url: redis_client, ControllerMetrics(CollectorRegistry()))
    assert await drainer.scale_down(target, SPEC, 2, 1, _never) == 2
    assert target.scales == []  # w-1 was not removed: its consumer never drained
    [(reason, message, _)] = target.events
    assert reason == "DrainCancelled" and "w-1 registered during the drain" in message
    assert target.costs == {"w-1": None}  # put back to work


async def test_a_victim_still_starting_is_waited_for_and_told_to_drain(
    redis_client: aioredis.Redis,
) -> None:
    """A pod created a moment ago, running, its consumer not registered yet: the cheapest
    victim, yet not removed before its consumer registers, is told to drain and drains."""
    target = MemoryTarget(WorkloadRef("default", "w"), replica_count=2)
    target.pods = [ReplicaInfo("w-0", True, 0.0), ReplicaInfo("w-1", True, time.time())]
    old = Registration(ConsumerKeys("jobs", "w-0"), "w-0", "token", 5, time.time())
    await heartbeat(redis_client, old, ConsumerState.RUNNING, 0, 10_000)
    new = Registration(ConsumerKeys("jobs", "w-1"), "w-1", "token", 5, time.time())
    states = [ConsumerState.RUNNING]

    async def sidecar_starts() -> int | None:  # called every polling interval of the wait
        if await heartbeat(redis_client, new, states[-1], 0, 10_000) is Command.DRAIN:
            states.append(ConsumerState.DRAINED)
        return None

    spec = replace(SPEC, polling_interval_s=0.05, drain_timeout_s=60.0)
    drainer = Drainer(lambda url: redis_client, ControllerMetrics(CollectorRegistry()),
                      poll_interval_s=0.02)  # fmt: skip
    assert await drainer.scale_down(target, spec, 2, 1, sidecar_starts) == 1
    assert [p.name for p in target.pods] == ["w-0"]
    assert states[-1] is ConsumerState.DRAINED  # it drained before /scale was written
    assert not [e for e in target.events if e[0] in ("DrainCancelled", "DrainTimedOut")]
