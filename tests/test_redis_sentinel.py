"""Sentinel: a failover in the middle of a run loses nothing, and the controller follows.

One master, one replica, three sentinels (real ``redis-server --sentinel``). Two sidecars
(``autoscaler consume --sentinels … --sentinel-master …``) consume 2,000 uniquely numbered
messages; the controller sizes the workload from ``redis-sentinels`` annotations.
``SENTINEL FAILOVER`` promotes the replica mid-run. Every id is counted at the processor.
The producer waits for the replica to acknowledge each batch (``WAIT 1``): a write the
replica never saw is lost by any asynchronous failover, whatever the consumer does, and
production producers that need durability do the same.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from prometheus_client import CollectorRegistry
from redis.asyncio.sentinel import Sentinel

from autoscaler.annotations import ANNOTATION_PREFIX
from autoscaler.controller import Controller
from autoscaler.metrics import ControllerMetrics
from autoscaler.sources import SourcePool
from autoscaler.workload import WorkloadEvent, WorkloadRef
from tests.e2e import eventually
from tests.memtarget import MemoryTarget
from tests.processor import Processor
from tests.redisprod import SentinelSet, admin, command_calls, start_sentinels
from tests.servers import free_port

QUEUE = "orders"
TOTAL = 2000


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[SentinelSet]:
    group = start_sentinels(tmp_path / "servers")
    yield group
    group.stop()


def _sidecar(group: SentinelSet, forward: str, pod: str, log: Path) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "autoscaler", "consume", "--queue", QUEUE, "--forward",
            forward, "--sentinels", group.addresses, "--sentinel-master", group.name,
            "--id", pod, "--concurrency", "4", "--heartbeat-interval", "0.2",
            "--log-format", "json"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
    with log.open("wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)


async def _produce(master: aioredis.Redis, first: int, count: int) -> None:
    """Numbered messages in batches of 50, each acknowledged by the replica.

    Like any producer that must not lose what it sends, it resends a batch whose push or
    acknowledgement was cut by the failover (the promoted server and the demoted one both
    close their clients' connections); a resent batch can only add duplicates, which the
    test counts as redeliveries, never a loss.
    """
    for start in range(first, first + count, 50):
        batch = [b"msg-%05d" % i for i in range(start, start + 50)]
        async with asyncio.timeout(30):
            while True:
                try:
                    await master.lpush(QUEUE, *batch)
                    while await master.execute_command("WAIT", 1, 1000) < 1:
                        pass  # the replica is (re)attaching: the batch is not safe yet
                    break
                except (redis.exceptions.ConnectionError, redis.exceptions.ReadOnlyError):
                    await asyncio.sleep(0.2)  # a retry pause, not a synchronisation


async def _until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    await eventually(check, timeout_s, what)


async def test_failover_mid_run_loses_nothing_and_the_controller_follows(
    sentinels: SentinelSet, tmp_path: Path
) -> None:
    manager = Sentinel([("127.0.0.1", s.port) for s in sentinels.sentinels], socket_timeout=5)
    master = manager.master_for(sentinels.name)
    ref = WorkloadRef("shop", "orders")
    target = MemoryTarget(ref)
    pool = SourcePool()
    controller = Controller(sources=pool, target_factory=lambda _: target,
                            metrics=ControllerMetrics(CollectorRegistry()))  # fmt: skip
    spec = {"redis-list": QUEUE, "messages-per-replica": "100", "polling-interval": "100ms",
            "redis-sentinels": sentinels.addresses, "redis-sentinel-master": sentinels.name,
            "scale-down-stabilization": "0", "cooldown": "0", "max-replicas": "20",
            "drain": "false"}  # fmt: skip
    controller.apply(WorkloadEvent(ref, {ANNOTATION_PREFIX + k: v for k, v in spec.items()}, 1))
    target.replica_count = 1
    old_port = sentinels.master_port()
    await _produce(master, 0, TOTAL // 2)
    running = asyncio.create_task(controller.run())
    sidecars: list[subprocess.Popen[bytes]] = []
    async with Processor(latency_s=0.02) as processor:
        try:
            await _until(lambda: target.replica_count >= 5, 20, "the first scale-up")
            sidecars = [
                _sidecar(sentinels, processor.url, f"pod-{i}-{free_port()}", tmp_path / f"s{i}.log")
                for i in range(2)
            ]
            await _until(lambda: len(set(processor.accepted)) >= 300, 30, "300 processed")
            processed_at_failover = len(set(processor.accepted))
            admin(sentinels.sentinels[0].port).execute_command(
                "SENTINEL", "FAILOVER", sentinels.name
            )
            await _until(lambda: sentinels.master_port() != old_port, 30, "the failover")
            new = admin(sentinels.replica.port)
            await _until(lambda: new.info("replication")["connected_slaves"] == 1, 30,
                         "the old master to follow the new one")  # fmt: skip
            scales_before = len(target.scales)
            processed_after_failover = len(set(processor.accepted))
            await _produce(master, TOTAL // 2, TOTAL // 2)  # to the new master
            await _until(lambda: len(set(processor.accepted)) >= TOTAL, 120, "every message")
            await _until(lambda: len(target.scales) > scales_before, 30, "a scale after it")
            await _until(lambda: target.replica_count == 0, 30, "the scale-down to zero")
        finally:
            for proc in sidecars:
                proc.terminate()
            for proc in sidecars:
                proc.wait(20)
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            await pool.aclose()
            await master.aclose()
    expected = {b"msg-%05d" % i for i in range(TOTAL)}
    accepted = set(processor.accepted)
    assert sentinels.master_port() == sentinels.replica.port  # the replica was promoted
    # the controller's reads went to the new master (a replica until the failover)
    reads_on_new_master = command_calls(sentinels.replica.port, ["evalsha", "eval"])
    assert reads_on_new_master > 0
    assert accepted == expected, f"lost {len(expected - accepted)}"
    duplicates = len(processor.accepted) - len(accepted)
    print(f"\nsentinel failover: {TOTAL} sent, {len(accepted)} processed, 0 lost, "
          f"{duplicates} redelivered; failover from {processed_at_failover} to "
          f"{processed_after_failover} processed; scales {target.scales}; "
          f"controller reads on the new master {reads_on_new_master}")  # fmt: skip
