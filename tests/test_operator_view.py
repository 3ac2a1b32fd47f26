"""What an operator sees, through the loop against real Redis (and Prometheus): the status
annotation's conditions, the Events (once per change), scheduled floors, paused-replicas,
and Redis memory pressure on a real redis-server with a small ``maxmemory``."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from autoscaler.annotations import ANNOTATION_PREFIX, STATUS_ANNOTATION, spec_with
from autoscaler.controller import Controller, MemoryWatch
from autoscaler.drain import Drainer
from autoscaler.keys import ConsumerState
from autoscaler.kube import KubeClient
from autoscaler.logs import FIELDS
from autoscaler.metrics import ControllerMetrics
from autoscaler.policy import RedisTrigger
from autoscaler.redisqueue import ConsumerKeys, heartbeat
from autoscaler.redisqueue.registry import Registration
from autoscaler.sources import SourcePool
from autoscaler.targets.kubernetes import KubeTarget
from autoscaler.workload import WorkloadEvent, WorkloadRef
from tests.fakekube import FakeKubeServer
from tests.fakekube.fixtures import fake_kube as fake_kube
from tests.kubeutil import kube as kube
from tests.kubeutil import metrics as metrics
from tests.kubeutil import requests_of, workload
from tests.memtarget import MemoryTarget
from tests.servers import PrometheusServer, RedisServer
from tests.test_controller import running, wait_for

MONDAY_0800 = dt.datetime(2026, 12, 7, 8, 0, tzinfo=dt.UTC).timestamp()
TWO_SERIES = (
    'label_replace(vector(1), "a", "x", "", "") or label_replace(vector(2), "a", "y", "", "")'
)


def spec_of(queue: str, **extra: str) -> dict[str, str]:
    """Annotations for a fast test loop: 200 ms polls, no windows, no drains."""
    base = {
        "redis-list": queue, "messages-per-replica": "50", "polling-interval": "200ms",
        "scale-up-max-pods": "100", "scale-down-stabilization": "0", "cooldown": "0",
        "drain": "false",
    }  # fmt: skip
    base.update({k.replace("_", "-"): v for k, v in extra.items()})
    return {ANNOTATION_PREFIX + k: v for k, v in base.items()}


class WallClock:
    """The calendar the controller sees (its ``wall_clock`` seam)."""

    def __init__(self, at: float) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at


class Loop:
    """A controller over in-memory targets, with an optional ``MemoryWatch``."""

    def __init__(self, redis_url: str, *, memory_s: float | None = None, **options: Any) -> None:
        self.registry = CollectorRegistry()
        self.metrics = ControllerMetrics(self.registry)
        self.pool = SourcePool(redis_url=redis_url)
        self.targets: dict[WorkloadRef, MemoryTarget] = {}
        memory = None
        if memory_s is not None:
            memory = MemoryWatch(self.pool.redis_client, self.metrics, interval_s=memory_s)
        self.controller = Controller(
            sources=self.pool,
            target_factory=lambda ref: self.targets.setdefault(ref, MemoryTarget(ref)),
            metrics=self.metrics,
            memory=memory,
            **options,
        )

    def add(self, name: str, replicas: int = 0, **extra: str) -> MemoryTarget:
        ref = WorkloadRef("default", name)
        self.controller.apply(WorkloadEvent(ref, spec_of(name, **extra), replicas))
        self.targets[ref].replica_count = replicas
        return self.targets[ref]

    def sample(self, name: str, labels: Mapping[str, str]) -> float | None:
        return self.registry.get_sample_value(name, dict(labels))

    def running(self) -> contextlib.AbstractAsyncContextManager[None]:
        return running(self.controller, self.pool)


def conditions(target: MemoryTarget) -> dict[str, dict[str, Any]]:
    latest = target.statuses[-1] if target.statuses else {}
    return {c["type"]: c for c in latest.get("conditions", [])}  # type: ignore[attr-defined]


def reasons(target: MemoryTarget) -> list[str]:
    return [reason for reason, _, _ in target.events]


def events(target: MemoryTarget, reason: str) -> list[tuple[str, str, bool]]:
    return [e for e in target.events if e[0] == reason]


async def test_conditions_flip_with_activation_and_transition_times_stay(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    loop = Loop(redis_url)
    async with loop.running():
        target = loop.add("jobs")
        await wait_for(lambda: "Active" in conditions(target))
        first = conditions(target)
        assert {k: c["status"] for k, c in first.items()} == {
            "Ready": "True", "Active": "False", "Fallback": "False", "Paused": "False",
        }  # fmt: skip
        await redis_client.lpush("jobs", *[f"m{i}" for i in range(120)])
        await wait_for(lambda: conditions(target)["Active"]["status"] == "True")
        active = conditions(target)
        # Ready did not flip: its transition time is the first one
        assert active["Ready"]["lastTransitionTime"] == first["Ready"]["lastTransitionTime"]
        assert target.statuses[-1]["backlog"] == 120
        await redis_client.delete("jobs")
        await wait_for(lambda: conditions(target)["Active"]["status"] == "False")
        await wait_for(lambda: bool(events(target, "WorkloadIdle")))
        cycles = loop.controller.cycles
        await wait_for(lambda: loop.controller.cycles >= cycles + 5)
    assert len(events(target, "WorkloadActive")) == 1
    assert len(events(target, "WorkloadIdle")) == 1


async def test_prometheus_cause_is_an_event_and_a_log_line_once_per_change(
    redis_url: str, prometheus_server: PrometheusServer, caplog: pytest.LogCaptureFixture
) -> None:
    loop = Loop(redis_url)
    with caplog.at_level(logging.INFO, logger="autoscaler.controller"):
        async with loop.running():
            target = loop.add(
                "jobs", prometheus_url=prometheus_server.url, prometheus_query=TWO_SERIES,
                prometheus_target="1",
            )  # fmt: skip
            await wait_for(lambda: bool(events(target, "TriggerFailed")), timeout_s=10)
            cycles = loop.controller.cycles
            await wait_for(lambda: loop.controller.cycles >= cycles + 10)
    failed = events(target, "TriggerFailed")
    assert len(failed) == 1  # ten more failing cycles: no more Events
    _, message, warning = failed[0]
    assert warning and message.startswith("prometheus: ")
    assert "2 series, expected one: aggregate it, e.g. sum(...)" in message
    logged = [getattr(r, FIELDS) for r in caplog.records if r.getMessage() == "trigger failed"]
    assert [f["error"] for f in logged] == [message.removeprefix("prometheus: ")]
    ready = conditions(target)["Ready"]
    assert ready["status"] == "False" and ready["reason"] == "TriggerError"
    assert "aggregate it, e.g. sum(...)" in ready["message"]


async def test_fallback_entered_and_left_with_trigger_failure_and_recovery(
    redis_url: str, own_redis: RedisServer
) -> None:
    loop = Loop(redis_url)
    async with loop.running():
        target = loop.add(
            "jobs", replicas=1, redis_url=own_redis.url, fallback_replicas="3",
            failure_threshold="2", fallback_behavior="static",
        )  # fmt: skip
        await wait_for(lambda: "Fallback" in conditions(target))
        own_redis.stop()
        await wait_for(lambda: bool(events(target, "FallbackEntered")), timeout_s=15)
        await wait_for(lambda: target.replica_count == 3)
        assert conditions(target)["Fallback"]["status"] == "True"
        own_redis.restart()
        await wait_for(lambda: bool(events(target, "FallbackLeft")), timeout_s=20)
        await wait_for(lambda: bool(events(target, "TriggerRecovered")))
    assert len(events(target, "FallbackEntered")) == 1
    assert events(target, "FallbackEntered")[0][2]  # a Warning
    assert len(events(target, "TriggerFailed")) == 1
    assert conditions(target)["Fallback"]["status"] == "False"


async def test_schedule_scales_from_zero_before_load_then_back(redis_url: str) -> None:
    wall = WallClock(MONDAY_0800 - 60)
    loop = Loop(redis_url, wall_clock=wall)
    async with loop.running():
        target = loop.add("jobs", schedule="start=0 8 * * 1-5, end=0 18 * * 1-5, replicas=3")
        await wait_for(lambda: loop.controller.cycles >= 3)
        assert target.replica_count == 0  # 07:59: closed, no load
        wall.at = MONDAY_0800 + 30
        await wait_for(lambda: target.replica_count == 3)  # the queue is still empty
        assert "schedule floor 3" in target.statuses[-1]["message"]  # type: ignore[operator]
        wall.at = MONDAY_0800 + 10 * 3600  # 18:00: closed, cooldown 0
        await wait_for(lambda: target.replica_count == 0)


async def test_paused_replicas_holds_n_and_the_paused_condition(redis_url: str) -> None:
    loop = Loop(redis_url)
    async with loop.running():
        target = loop.add("jobs", replicas=5, paused_replicas="2")
        await wait_for(lambda: target.replica_count == 2)
        await wait_for(lambda: conditions(target).get("Paused", {}).get("status") == "True")
        assert conditions(target)["Paused"]["message"] == "paused at 2 replicas by annotation"


# ---- Redis memory ------------------------------------------------------------------------


async def _limit_memory(client: aioredis.Redis, ratio: float) -> int:
    """Set maxmemory so that what Redis uses now is ``ratio`` of it; returns maxmemory."""
    used = int((await client.info("memory"))["used_memory"])
    maxmemory = int(used / ratio)
    await client.config_set("maxmemory", maxmemory)
    return maxmemory


async def _fill(client: aioredis.Redis, maxmemory: int, ratio: float) -> list[str]:
    """Write 1 % pieces until Redis uses ``ratio`` of maxmemory; returns their keys."""
    chunk, keys = b"x" * (maxmemory // 100), list[str]()
    while int((await client.info("memory"))["used_memory"]) < ratio * maxmemory:
        keys.append(f"ballast:{len(keys)}")
        await client.set(keys[-1], chunk)
    return keys


async def test_memory_pressure_scales_up_until_below_low(own_redis: RedisServer) -> None:
    client = aioredis.Redis.from_url(own_redis.url)
    try:
        maxmemory = await _limit_memory(client, 0.4)
        loop = Loop(own_redis.url, memory_s=0.2)
        async with loop.running():
            target = loop.add(
                "jobs", replicas=1, redis_memory_high="0.8", redis_memory_low="0.6",
                scale_up_max_pods="2", scale_up_period="1s",
            )  # fmt: skip
            await wait_for(lambda: loop.controller.cycles >= 3)
            assert target.replica_count == 0  # empty queue, 40 % full: back to zero
            ballast = await _fill(client, maxmemory, 0.85)
            await wait_for(lambda: target.replica_count >= 2)  # no backlog at all
            assert target.statuses[-1]["reason"] in ("RedisMemoryPressure", "Activated")
            await wait_for(lambda: target.replica_count >= 6)  # +2 per period, still under
            labels = {"namespace": "default", "workload": "jobs"}
            ratio = loop.sample("queue_autoscaler_redis_memory_ratio", labels)
            assert ratio is not None and ratio >= 0.8
            await client.delete(*ballast)
            await wait_for(lambda: target.replica_count == 0)
            assert not [e for e in target.events if e[0] == "RedisMemoryRisk"]
    finally:
        await client.aclose()


async def test_maxmemory_0_with_watermarks_is_warned_once(own_redis: RedisServer) -> None:
    """No limit, no ratio: the watermarks could never fire. Said once, to the workloads that
    set them; the ratio then comes back with a limit, and so does the metric."""
    client = aioredis.Redis.from_url(own_redis.url)
    try:
        loop = Loop(own_redis.url, memory_s=0.1)
        async with loop.running():
            watched = loop.add("jobs", redis_memory_high="0.8")
            plain = loop.add("other")
            await wait_for(lambda: bool(events(watched, "RedisMemoryRisk")))
            cycles = loop.controller.cycles
            await wait_for(lambda: loop.controller.cycles >= cycles + 10)
            jobs = {"namespace": "default", "workload": "jobs"}
            assert loop.sample("queue_autoscaler_redis_maxmemory_unset", jobs) == 1.0
            await _limit_memory(client, 0.5)
            await wait_for(
                lambda: loop.sample("queue_autoscaler_redis_maxmemory_unset", jobs) == 0.0
            )
            ratio = loop.sample("queue_autoscaler_redis_memory_ratio", jobs)
            assert ratio is not None and 0.3 < ratio < 0.8
        [(_, message, warning)] = events(watched, "RedisMemoryRisk")
        assert warning and "maxmemory 0" in message and "never fires" in message
        assert not events(plain, "RedisMemoryRisk")
        other = {"namespace": "default", "workload": "other"}
        assert loop.sample("queue_autoscaler_redis_maxmemory_unset", other) is None
    finally:
        await client.aclose()


# ---- transition times across a restart (KubeTarget over the fake API server) -------------


def _status(active: str, at: str) -> dict[str, object]:
    return {
        "desired": 1,
        "reason": "DesiredWithinRange",
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "TriggersRead", "lastTransitionTime": at},
            {"type": "Active", "status": active, "reason": "Active", "lastTransitionTime": at},
        ],
    }


async def test_a_restarted_controller_keeps_transition_times_and_writes_nothing_unchanged(
    fake_kube: FakeKubeServer, kube: KubeClient
) -> None:
    fake_kube.create(workload("Deployment", "web"))
    ref = WorkloadRef("default", "web", "Deployment")
    await KubeTarget(kube, ref).write_status(_status("False", "2026-12-04T10:00:00Z"))
    stored = fake_kube.get("deployments", "default", "web")
    assert stored is not None
    seed = stored["metadata"]["annotations"][STATUS_ANNOTATION]
    # the new process's conditions carry its own start time: same statuses → no write
    restarted = KubeTarget(kube, ref, last_status=seed)
    await restarted.write_status(_status("False", "2026-12-04T11:00:00Z"))
    assert len(requests_of(fake_kube, "patch", "/deployments/web")) == 1
    # Active flips: written, with the new time for Active and the old one for Ready
    await restarted.write_status(_status("True", "2026-12-04T11:05:00Z"))
    stored = fake_kube.get("deployments", "default", "web")
    assert stored is not None
    doc = json.loads(stored["metadata"]["annotations"][STATUS_ANNOTATION])
    times = {c["type"]: c["lastTransitionTime"] for c in doc["conditions"]}
    assert times == {"Ready": "2026-12-04T10:00:00Z", "Active": "2026-12-04T11:05:00Z"}


# ---- drains that end without an acknowledgement ------------------------------------------


async def _running_consumers(client: aioredis.Redis, target: MemoryTarget) -> None:
    """A live consumer in every pod that never acknowledges a drain."""
    for pod in target.pods:
        reg = Registration(ConsumerKeys("jobs", pod.name), pod.name, "token", 5, time.time())
        await heartbeat(client, reg, ConsumerState.RUNNING, 1, 60_000)


async def _wanted_more() -> int | None:
    return 3


async def test_drain_timed_out_and_cancelled_are_events_with_their_cause(
    redis_client: aioredis.Redis,
) -> None:
    spec = spec_with((RedisTrigger(("jobs",), 10),), drain_timeout_s=0.3, polling_interval_s=10.0)
    target = MemoryTarget(WorkloadRef("default", "w"))
    await target.scale(2)
    await _running_consumers(redis_client, target)
    metrics = ControllerMetrics(CollectorRegistry())
    drainer = Drainer(lambda url: redis_client, metrics, poll_interval_s=0.02)
    assert await drainer.scale_down(target, spec, 2, 1, _wanted_more) == 1  # timed out: goes on
    [(_, message, warning)] = events(target, "DrainTimedOut")
    assert warning and message.startswith("drain timed out after 0.3s waiting for w-")
    assert "unfinished messages go back to the queue" in message

    await target.scale(2)
    await _running_consumers(redis_client, target)
    patient = replace(spec, drain_timeout_s=60.0, polling_interval_s=0.05)
    assert await drainer.scale_down(target, patient, 2, 1, _wanted_more) == 2  # cancelled
    [(_, message, warning)] = events(target, "DrainCancelled")
    assert not warning
    assert message == "drain cancelled: load rose during the drain (3 replicas wanted)"
