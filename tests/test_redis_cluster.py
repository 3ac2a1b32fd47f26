"""Redis Cluster: three masters (``redis-cli --cluster create``), 1,000 queues over the slots.

The controller's read of a cycle must stay one round trip per node: every command each
node ran during one read is counted from its ``INFO commandstats``. A queue without a
``{hash tag}`` and a database index are refused with a message saying what to do; the
sidecar consumes a tagged queue on the cluster (its scripts touch one slot only).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import yaml
from prometheus_client import CollectorRegistry
from redis.asyncio.cluster import RedisCluster

from autoscaler.annotations import ANNOTATION_PREFIX, ENABLED_LABEL, parse_spec
from autoscaler.cli import main
from autoscaler.controller import Controller
from autoscaler.errors import InvalidSpecError
from autoscaler.keys import consumer_key, consumers_key, lease_key, processing_key
from autoscaler.metrics import ControllerMetrics
from autoscaler.policy.spec import RedisTrigger
from autoscaler.sources import SourcePool
from autoscaler.workload import WorkloadEvent, WorkloadRef
from tests.e2e import eventually
from tests.memtarget import MemoryTarget
from tests.processor import Processor
from tests.redisprod import ClusterSet, admin, start_cluster

QUEUES = 1000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSet]:
    group = start_cluster(tmp_path_factory.mktemp("cluster"))
    yield group
    group.stop()


# What the read script itself calls: counted by INFO commandstats, but inside one EVALSHA.
INSIDE_SCRIPT = {"llen", "smembers", "exists", "get"}


def _commands(node: redis.Redis) -> int:
    """Commands clients sent this node (not the read script's own calls, not the INFO that
    asks, on a connection opened before): a pipeline's commands would each count, so this
    bounds the round trips."""
    stats = node.info("commandstats")
    return sum(
        int(v["calls"])
        for k, v in stats.items()
        if k.removeprefix("cmdstat_") not in {*INSIDE_SCRIPT, "info"}
    )


def _spec(queue: str, url: str) -> dict[str, str]:
    keys = {"redis-list": queue, "messages-per-replica": "10", "redis-url": url,
            "redis-cluster": "true", "polling-interval": "100ms", "drain": "false",
            "max-replicas": "50", "scale-up-max-pods": "50"}  # fmt: skip
    return {ANNOTATION_PREFIX + k: v for k, v in keys.items()}


async def test_a_cycle_of_1000_queues_is_one_round_trip_per_node(cluster: ClusterSet) -> None:
    names = [f"jobs:{{q{i:04d}}}" for i in range(QUEUES)]
    client = RedisCluster.from_url(cluster.url)
    try:
        for i, name in enumerate(names):  # a backlog of i % 7, two consumers on every 10th
            if i % 7:
                await client.lpush(name, *[b"m"] * (i % 7))
            if i % 10 == 0:
                for cid in ("a", "b"):
                    await client.sadd(consumers_key(name), cid)
                    await client.lpush(processing_key(name, cid), b"held")
                    await client.set(lease_key(cid, name), "1", px=60_000)
        ports = [n.port for n in cluster.nodes]
        queues_per_node = [
            sum(client.get_node_from_key(name).port == port for name in names) for port in ports
        ]
    finally:
        await client.aclose()
    triggers = [parse_spec(_spec(name, cluster.url)).triggers[0] for name in names]
    assert all(isinstance(t, RedisTrigger) for t in triggers)
    pool = SourcePool()
    per_node: list[list[int]] = []
    nodes = [admin(n.port) for n in cluster.nodes]
    try:
        for _ in range(3):  # the first read also learns the slot map
            before = [_commands(n) for n in nodes]
            readings = await pool.read(triggers)
            per_node.append([_commands(n) - b for n, b in zip(nodes, before, strict=True)])
    finally:
        await pool.aclose()
    for i, reading in enumerate(readings):
        held = 2 if i % 10 == 0 else 0
        expected = (i % 7, held, 2 * (i % 10 == 0))
        assert (reading.backlog, reading.in_flight, reading.consumers) == expected, i
    print(
        f"\ncluster: {QUEUES} queues on 3 masters (queues per node {queues_per_node}); "
        f"commands per node per cycle {per_node[1:]} (first cycle {per_node[0]})"
    )
    assert per_node[1] == per_node[2] == [1, 1, 1]  # one EVALSHA per node: one round trip


async def test_the_controller_scales_workloads_on_a_cluster(cluster: ClusterSet) -> None:
    client = RedisCluster.from_url(cluster.url)
    await client.lpush("{scale}jobs", *[b"x"] * 45)
    await client.aclose()
    ref = WorkloadRef("shop", "scale")
    target = MemoryTarget(ref)
    pool = SourcePool()
    controller = Controller(sources=pool, target_factory=lambda _: target,
                            metrics=ControllerMetrics(CollectorRegistry()))  # fmt: skip
    controller.apply(WorkloadEvent(ref, _spec("{scale}jobs", cluster.url), 1))
    target.replica_count = 1
    task = asyncio.create_task(controller.run())
    try:
        await eventually(lambda: target.replica_count == 5, 20, "the scale-up to 5")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await pool.aclose()
    assert target.scales == [5]


def test_a_queue_without_hash_tag_is_refused_saying_how_to_name_it() -> None:
    with pytest.raises(InvalidSpecError) as caught:
        parse_spec(_spec("jobs", "redis://127.0.0.1:7000"))
    message = str(caught.value)
    assert "redis-list" in message and "hash tag" in message and "'{jobs}'" in message


def test_a_database_index_is_refused_not_ignored() -> None:
    with pytest.raises(InvalidSpecError, match="only database 0"):
        parse_spec(_spec("{jobs}", "redis://127.0.0.1:7000/3"))


STREAM_ON_CLUSTER = {
    ANNOTATION_PREFIX + "redis-stream": "{events}",
    ANNOTATION_PREFIX + "redis-consumer-group": "workers",
    ANNOTATION_PREFIX + "redis-url": "redis://127.0.0.1:7000",
    ANNOTATION_PREFIX + "redis-cluster": "true",
    ANNOTATION_PREFIX + "messages-per-replica": "10",
}


def test_a_stream_trigger_on_a_cluster_is_refused_when_parsed() -> None:
    with pytest.raises(InvalidSpecError) as caught:
        parse_spec(STREAM_ON_CLUSTER)
    assert caught.value.key == ANNOTATION_PREFIX + "redis-stream"
    assert "not supported on Redis Cluster" in str(caught.value)


def test_check_refuses_a_stream_trigger_on_a_cluster(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "w", "namespace": "apps", "annotations": STREAM_ON_CLUSTER,
                             "labels": {ENABLED_LABEL: "true"}},
                "spec": {"template": {"metadata": {}}}}  # fmt: skip
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(manifest))
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert (f"error: annotation {ANNOTATION_PREFIX}redis-stream: '{{events}}': expected no "
            "redis-stream with redis-cluster") in out and "Traceback" not in out  # fmt: skip


def _consume(cluster: ClusterSet, queue: str, forward: str, log: Path,
             *flags: str) -> subprocess.Popen[bytes]:  # fmt: skip
    args = [sys.executable, "-m", "autoscaler", "consume", "--queue", queue, "--forward",
            forward, "--redis-url", cluster.url, "--cluster", "--id", "pod-1",
            "--heartbeat-interval", "0.2", "--log-format", "json", *flags]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
    with log.open("wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)


async def test_the_sidecar_consumes_a_tagged_queue_on_the_cluster(
    cluster: ClusterSet, tmp_path: Path
) -> None:
    queue = "work:{side}"
    bodies = [b"id-%04d" % i for i in range(300)]
    client = RedisCluster.from_url(cluster.url)
    await client.lpush(queue, *bodies)
    async with Processor(fail_ratio=0.05, seed=1) as processor:
        proc = _consume(cluster, queue, processor.url, tmp_path / "sidecar.log",
                        "--concurrency", "4", "--retry-backoff", "0.01")  # fmt: skip
        try:
            await eventually(lambda: len(set(processor.accepted)) == len(bodies), 60, "all")

            async def registered() -> bool:  # its registry hash, in the queue's slot
                return await client.hget(consumer_key("pod-1", queue), "state") is not None

            await eventually(registered, 10, "the registry entry")
        finally:
            proc.terminate()
            code = proc.wait(20)
            await client.aclose()
    assert set(processor.accepted) == set(bodies)
    assert code == 0, (tmp_path / "sidecar.log").read_text()[-2000:]
    assert "CROSSSLOT" not in (tmp_path / "sidecar.log").read_text()


def test_the_sidecar_refuses_a_queue_without_hash_tag(cluster: ClusterSet, tmp_path: Path) -> None:
    proc = _consume(cluster, "jobs", "http://127.0.0.1:9/process", tmp_path / "s.log")
    assert proc.wait(30) == 2
    text = (tmp_path / "s.log").read_text()
    assert "--queue: 'jobs' has no {hash tag}" in text and "Traceback" not in text


def test_the_sidecar_refuses_a_stream_on_the_cluster(cluster: ClusterSet, tmp_path: Path) -> None:
    log = tmp_path / "s.log"
    args = [sys.executable, "-m", "autoscaler", "consume", "--stream", "{events}", "--group",
            "workers", "--forward", "http://127.0.0.1:9/process", "--redis-url", cluster.url,
            "--cluster", "--id", "pod-1"]  # fmt: skip
    with log.open("wb") as out:
        code = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, timeout=60).returncode
    text = log.read_text()
    assert code == 2 and "--cluster: not with --stream" in text and "Traceback" not in text
