"""The fault matrix's "controller SIGKILLed mid-drain" on the real control plane (issue 12).

A drain waits for three victims that hold messages (the processor hangs): they are told to
drain and marked −2³¹, and the Deployment has not been scaled yet. The controller is
SIGKILLed there, leaving its drain behind, and a second one started. Once the dead one's
Lease expires the new leader puts the stale drain's victims back to work (``stale drain
released``: command RUN, the −2³¹ marks taken off), then decides afresh and drains again;
the processor is released only then. Every id is processed, every pod Kubernetes removed
had drained first, the one pod left carries no mark, and no consumer is left told to drain.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import redis.asyncio as aioredis

from autoscaler.keys import Command
from autoscaler.redisqueue import read_registry
from tests.cluster.api import Api, eventually
from tests.cluster.conftest import Cluster
from tests.cluster.harness import (
    DrainWitness,
    consumer_args,
    events_of,
    ids_of,
    k8s_events,
    marked,
    pod_costs,
    processed_all,
    pushing,
    ready_pods,
    settled_at,
    start_controller,
    undrained_events,
    worker,
)
from tests.cluster.node import NodeEmulator
from tests.e2e import Proc
from tests.processor import Processor

LEASE_S = 4.0
ELECTION = (f"--lease-duration={LEASE_S}", "--renew-deadline=3", "--retry-period=0.5")
SPEC = {
    "redis_list": "jobs", "messages_per_replica": "100", "min_replicas": "1",
    "max_replicas": "4", "drain_timeout": "60s", "polling_interval": "1s",
    "scale_down_stabilization": "0s", "drain": "true",
}  # fmt: skip


async def test_controller_sigkilled_mid_drain_the_new_leader_releases_and_drains_again(
    cluster: Cluster,
    api: Api,
    namespace: str,
    redis_url: str,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    ids = ids_of(4)
    witness = DrainWitness(redis_client, "jobs")
    node = NodeEmulator(api, namespace, tmp_path, on_terminating=witness.on_terminating)
    async with Processor() as processor:
        processor.respond(*["hang"] * len(ids))
        args = consumer_args(redis_url, "jobs", processor.url, "--concurrency=1")
        await api.create(worker(namespace, "worker", args, replicas=4, grace_s=5, **SPEC))
        async with node.running_in_background():
            await eventually(lambda: _n_ready(api, namespace, 4), 60, "4 pods ready", step_s=0.1)
            await pushing(redis_client, ids, processor)()  # one held message per pod
            first = await start_controller(
                cluster, tmp_path, redis_url, namespace, "ctl-a", *ELECTION
            )
            second: Proc | None = None
            try:
                victims = await eventually(lambda: marked(api, namespace, 3), 30, "3 victims")
                assert await _told_to_drain(redis_client) == 3
                first.process.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                await first.process.wait()
                second = await start_controller(
                    cluster, tmp_path, redis_url, namespace, "ctl-b", *ELECTION
                )
                [released] = await eventually(
                    lambda: _logged(second, "stale drain released"), LEASE_S + 15,
                    "the stale drain released", step_s=0.1,
                )  # fmt: skip
                released_s = time.monotonic() - killed
                assert sorted(str(released["pods"]).split(",")) == victims, released
                # Its own drain now: the victims marked again, still holding their messages.
                await eventually(lambda: _drain_started(second), 20, "ctl-b drains", step_s=0.1)
                processor.release()
                await eventually(
                    lambda: settled_at(api, namespace, 1), 60, "1 pod left", step_s=0.2
                )
                settled_s = time.monotonic() - killed
                costs = await pod_costs(api, namespace)
                left_draining = await _told_to_drain(redis_client)
                events = await k8s_events(api, namespace, "worker")
            finally:
                processor.release()
                if second is not None and second.process.returncode is None:
                    assert await second.stop() == 0, second.tail()
        assert not node.errors, node.errors
    assert list(costs.values()) == [None], costs  # no −2³¹ mark left on the survivor
    assert left_draining == 0
    assert len(witness.seen) == 3, witness.seen
    assert witness.undrained() == {}, witness.undrained()  # every removed pod drained first
    assert undrained_events(events) == []
    assert await processed_all(processor, ids)  # 0 lost, by id
    duplicated = len(processor.accepted) - len(set(processor.accepted))
    print(
        f"\ncontroller SIGKILLed mid-drain: {len(ids)} produced, "
        f"{len(set(processor.accepted) & set(ids))} processed, {duplicated} duplicated; "
        f"stale drain released {released_s:.1f} s, settled at 1 pod {settled_s:.1f} s "
        f"after the SIGKILL (lease {LEASE_S} s)"
    )


async def _n_ready(api: Api, namespace: str, count: int) -> bool:
    return len(await ready_pods(api, namespace, "app=worker")) == count


async def _told_to_drain(redis: aioredis.Redis) -> int:
    """Live consumers told to drain (a removed pod's entry stays until its lease expires)."""
    entries = await read_registry(redis, "jobs")
    return sum(c.lease_alive and c.command is Command.DRAIN for c in entries)


async def _logged(proc: Proc, event: str) -> list[dict[str, object]]:
    return events_of(proc, event)


async def _drain_started(proc: Proc) -> bool:
    return bool(events_of(proc, "drain started"))
