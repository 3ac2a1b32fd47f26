"""The parts of the live system (``tests.livesystem``): the controller side, in a thread
with its own event loop, and the ``autoscaler consume`` sidecars as subprocesses.

The workloads of the scenario are here too (``SPECS``, ``PODS``): see ``tests.livesystem``
for what each one is for.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry

from autoscaler.annotations import ANNOTATION_PREFIX
from autoscaler.controller import Controller
from autoscaler.drain import Drainer, Reaper
from autoscaler.kube import ClientSettings, KubeClient, LeaderElector, LeaderSettings
from autoscaler.metrics import ControllerMetrics, start_http_server
from autoscaler.redisconn import RedisCredentials, make_client
from autoscaler.redisqueue import read_registry
from autoscaler.sources import SourcePool
from autoscaler.workload import ReplicaInfo, WorkloadEvent, WorkloadRef
from tests.fakekube import FakeKubeServer
from tests.memtarget import MemoryTarget
from tests.processor import Processor
from tests.servers import free_port

T = TypeVar("T")

NAMESPACE = "shop"
CONTROLLER_JOB = "queue-autoscaler"
CONSUMER_JOB = "queue-consumer"
CONTROLLER_POD = "queue-autoscaler-5d8f7c9b6-x2x7q"
MAX_MESSAGE_BYTES = 2048
WAIT_S = 30.0  # deadline of each wait; a healthy run needs a fraction of it
FAST = {
    "polling-interval": "200ms",
    "scale-down-stabilization": "0",
    "cooldown": "0",
    "scale-up-max-pods": "10",
}
SPECS: dict[str, dict[str, str]] = {
    "jobs": {"redis-list": "jobs", "messages-per-replica": "20", "min-replicas": "1",
             "max-replicas": "6", "drain-timeout": "10s", **FAST},
    "slow": {"redis-list": "slow", "messages-per-replica": "50", "min-replicas": "1",
             "max-replicas": "2", "drain-timeout": "1s", **FAST},
    "flood": {"redis-list": "flood", "messages-per-replica": "10", "min-replicas": "1",
              "max-replicas": "1", **FAST},
    "lossy": {"redis-list": "lossy", "messages-per-replica": "10", "min-replicas": "1",
              "max-replicas": "3", **FAST},
    "blind": {"prometheus-query": "vector(1)", "prometheus-target": "1", "min-replicas": "1",
              "max-replicas": "3", "fallback-replicas": "2", "failure-threshold": "2", **FAST},
    "typo": {"redis-list": "typo", "messages-per-replica": "10", "max-replicas": "zero"},
}  # fmt: skip
PODS = {"jobs": ["jobs-a", "jobs-b"], "slow": ["slow-a", "slow-b"], "flood": ["flood-a"],
        "lossy": ["lossy-a"], "blind": ["blind-a"], "typo": ["typo-a"]}  # fmt: skip


# ---- the controller's side, in a thread with its own event loop ---------------------------


class CostBlindTarget(MemoryTarget):
    """A ReplicaSet that ignores pod-deletion-cost: it removes the oldest pods first."""

    async def scale(self, replicas: int, *, expected: int | None = None) -> None:
        if replicas < len(self.pods):
            self.pods.sort(key=lambda p: p.created_at)
            del self.pods[: len(self.pods) - replicas]
        await super().scale(replicas, expected=expected)


@dataclass
class ControllerSide:
    redis_url: str
    workdir: Path
    targets: dict[WorkloadRef, MemoryTarget] = field(default_factory=dict)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        self.closed_port = free_port()  # nothing listens there: the blind workload's Prometheus
        self.registry = CollectorRegistry()
        self.metrics = ControllerMetrics(self.registry)
        self.kube_server = await FakeKubeServer().start()
        kubeconfig = self.kube_server.write_kubeconfig(self.workdir / "kubeconfig")
        fast = ClientSettings(backoff_initial_s=0.01, backoff_max_s=0.05, request_timeout_s=5)
        self.kube = await KubeClient.connect(kubeconfig, settings=fast, metrics=self.metrics)
        # Long enough that a loaded machine never loses the lease mid-scenario.
        lease = LeaderSettings(lease_duration_s=15.0, renew_deadline_s=10.0, retry_period_s=1.0)
        self.elector = LeaderElector(self.kube, lease, identity="live", metrics=self.metrics)
        self.jobs_processor = await Processor(latency_s=(0.001, 0.01), fail_ratio=0.02).start()
        self.slow_processor = await Processor().start()
        self.slow_processor.respond(*["hang"] * 10)  # until stop(): the drain must time out
        self.redis = make_client(self.redis_url, RedisCredentials.from_env())
        self.pool = SourcePool(redis_url=self.redis_url)
        for name, pods in PODS.items():
            ref = WorkloadRef(NAMESPACE, name)
            kind = CostBlindTarget if name == "lossy" else MemoryTarget
            replicas = [ReplicaInfo(pod, True, i / 10) for i, pod in enumerate(pods)]
            self.targets[ref] = kind(ref, len(pods), replicas)
        self.controller = Controller(
            sources=self.pool,
            target_factory=self.targets.__getitem__,
            metrics=self.metrics,
            drainer=Drainer(lambda _: self.redis, self.metrics, poll_interval_s=0.05),
            reaper=Reaper(lambda _: self.redis, self.metrics),
            reap_interval_s=0.3,
            is_leader=self.elector.is_leader.is_set,
            batch_window_s=0.1,
        )
        self.http: web.AppRunner = await start_http_server(self.registry, 0, host="127.0.0.1")
        self.port: int = self.http.addresses[0][1]
        self._spawn(self.elector.run(), "elector")
        self._spawn(self.controller.run(), "controller")

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        self.tasks.append(asyncio.create_task(coro, name=name))

    async def apply_workloads(self, *, paused: bool) -> None:
        """The watch's events; ``paused``: valid specs, but nothing decided yet."""
        for ref, target in self.targets.items():
            spec = dict(SPECS[ref.name])
            if "prometheus-query" in spec:
                spec["prometheus-url"] = f"http://127.0.0.1:{self.closed_port}"
            if paused:
                spec["paused"] = "true"
            annotations = {ANNOTATION_PREFIX + k: v for k, v in spec.items()}
            self.controller.apply(WorkloadEvent(ref, annotations, target.replica_count))

    async def produce(self, queue: str, per_tick: int, tick_s: float = 0.2) -> None:
        """A steady producer, as a task until the end."""

        async def loop() -> None:
            n = 0
            while True:
                await self.redis.lpush(queue, *[f"{queue}-{n + i}" for i in range(per_tick)])
                n += per_tick
                await asyncio.sleep(tick_s)

        self._spawn(loop(), f"produce-{queue}")

    async def push(self, queue: str, messages: list[bytes]) -> None:
        await self.redis.lpush(queue, *messages)

    async def delete(self, queue: str) -> None:
        await self.redis.delete(queue)

    async def llen(self, queue: str) -> int:
        return int(await self.redis.llen(queue))

    async def describe(self, queue: str) -> dict[str, object]:
        """The queue and the processing lists of its consumers (diagnostics)."""
        held = {
            c.consumer_id: (
                c.state,
                c.in_flight,
                await self.redis.lrange(f"{queue}:processing:{c.consumer_id}", 0, -1),
            )
            for c in await read_registry(self.redis, queue)
        }
        return {"queue": await self.redis.lrange(queue, 0, -1), "consumers": held}

    async def registered(self, queue: str) -> int:
        return sum(1 for c in await read_registry(self.redis, queue) if c.lease_alive)

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def replicas(self, name: str) -> int:
        return self.targets[WorkloadRef(NAMESPACE, name)].replica_count

    async def stop(self) -> None:
        for task in reversed(self.tasks):
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self.http.cleanup()
        await self.jobs_processor.stop()
        await self.slow_processor.stop()
        await self.pool.aclose()
        await self.redis.aclose()
        await self.kube.close()
        await self.kube_server.stop()


class Background:
    """An event loop in a thread; ``run(coro)`` from the test thread waits for its result."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="live-controller", daemon=True
        )
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout_s: float = WAIT_S) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


# ---- the sidecars -------------------------------------------------------------------------


@dataclass
class Sidecar:
    pod: str
    queue: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # the scenario is over: nothing to drain into
        self.process.wait(10)


def start_sidecar(pod: str, queue: str, forward: str, redis_url: str, workdir: Path,
                  *flags: str) -> Sidecar:  # fmt: skip
    port = free_port()
    log = workdir / f"{pod}.log"
    args = [
        sys.executable, "-m", "autoscaler", "consume", "--queue", queue, "--forward", forward,
        "--redis-url", redis_url, "--metrics-port", str(port), "--id", pod,
        "--heartbeat-interval", "0.2", "--max-message-bytes", str(MAX_MESSAGE_BYTES),
        "--log-format", "json", *flags,
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "POD_NAME": pod}
        )
    return Sidecar(pod, queue, port, process, log)
