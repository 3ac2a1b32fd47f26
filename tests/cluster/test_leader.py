"""Scenario 6 on the real control plane: two controllers elect a leader on a real Lease;
SIGKILL the leader and the standby leads within the lease duration, and the workload is
never scaled twice for one decision (the standby wrote nothing while it stood by)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import redis.asyncio as aioredis

from tests.cluster import audit
from tests.cluster.api import Api, eventually
from tests.cluster.conftest import Cluster
from tests.cluster.harness import (
    CONTROLLER_NS,
    consumer_args,
    events_of,
    ready_pods,
    scalings,
    spec_replicas,
    start_controller,
    worker,
)
from tests.cluster.node import NodeEmulator
from tests.processor import Processor

LEASE = f"/apis/coordination.k8s.io/v1/namespaces/{CONTROLLER_NS}/leases/queue-autoscaler-leader"
LEASE_S, RENEW_S, RETRY_S = 4.0, 3.0, 0.5
ELECTION = (
    f"--lease-duration={LEASE_S}",
    f"--renew-deadline={RENEW_S}",
    f"--retry-period={RETRY_S}",
)


async def _holder(api: Api) -> str | None:
    lease = await api.maybe_get(LEASE)
    return None if lease is None else lease["spec"].get("holderIdentity")


async def test_standby_takes_over_within_the_lease_duration_without_double_scaling(
    cluster: Cluster,
    api: Api,
    namespace: str,
    redis_url: str,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    async with Processor() as processor:
        processor.respond(*["hang"] * 100)  # messages stay in flight: the load holds
        args = consumer_args(redis_url, "jobs", processor.url, "--concurrency=2")
        await api.create(
            worker(
                namespace,
                "worker",
                args,
                redis_list="jobs",
                messages_per_replica="10",
                min_replicas="1",
                max_replicas="5",
                polling_interval="1s",
            )
        )
        node = NodeEmulator(api, namespace, tmp_path)
        async with node.running_in_background():
            await eventually(lambda: ready_pods(api, namespace, "app=worker"), 30, "1 pod")
            leader = await start_controller(
                cluster, tmp_path, redis_url, namespace, "ctl-a", *ELECTION
            )
            standby = None
            try:
                await eventually(lambda: _is(api, "ctl-a"), 30, "ctl-a leading")
                standby = await start_controller(
                    cluster, tmp_path, redis_url, namespace, "ctl-b", *ELECTION
                )
                await eventually(
                    lambda: _logged(standby, "controller started"), 30, "ctl-b started"
                )
                started = time.time()
                await redis_client.lpush("jobs", *[json.dumps({"id": i}) for i in range(30)])
                await eventually(lambda: _replicas(api, namespace, 3), 10, "ctl-a scales to 3")
                assert await _scale_writes(cluster, started) == 1
                assert len(scalings(leader)) == 1
                assert not scalings(standby)

                leader.process.send_signal(signal.SIGKILL)
                killed = time.monotonic()
                await leader.process.wait()
                await eventually(lambda: _is(api, "ctl-b"), LEASE_S + RETRY_S + 2, "ctl-b")
                takeover_s = time.monotonic() - killed
                # A standby may take the Lease over only a lease duration after it *saw* the
                # last renewal (client-go's rule: no two leaders), which it sees up to one
                # retry period late, and it tries once per retry period (jittered): that is
                # the bound, plus a request's latency.
                assert takeover_s <= LEASE_S + 2 * RETRY_S + 0.5, takeover_s
                # The new leader sees 3 replicas for 30 messages: nothing to do, nothing written.
                await eventually(lambda: _logged(standby, "lease acquired"), 5, "ctl-b acquired")
                after = time.time()
                await redis_client.lpush("jobs", *[json.dumps({"id": i}) for i in range(30, 50)])
                await eventually(lambda: _replicas(api, namespace, 5), 10, "ctl-b scales to 5")
                assert await _scale_writes(cluster, started) == 2
                assert await _scale_writes(cluster, after) == 1
                # The decision's "scaled" line follows the /scale write: wait for it.
                await eventually(lambda: _scaled(standby), 5, "ctl-b's scaled line")
                assert [e["desired"] for e in scalings(standby)] == [5]
            finally:
                processor.release()
                for proc in (standby, leader):
                    if proc is not None and proc.process.returncode is None:
                        assert await proc.stop() == 0, proc.tail()
            assert not node.errors, node.errors
    print(f"\nleader takeover after SIGKILL: {takeover_s:.2f} s (lease {LEASE_S} s)")


async def _is(api: Api, identity: str) -> bool:
    return await _holder(api) == identity


async def _logged(proc: object, event: str) -> bool:
    return bool(events_of(proc, event))  # type: ignore[arg-type]


async def _scaled(proc: object) -> bool:
    return bool(scalings(proc))  # type: ignore[arg-type]


async def _replicas(api: Api, namespace: str, count: int) -> bool:
    return await spec_replicas(api, namespace, "worker") == count


async def _scale_writes(cluster: Cluster, since: float) -> int:
    writes = audit.writes(audit.read(cluster.plane.audit_log), since)
    return len([w for w in writes if w.resource == "deployments/scale"])
