"""A standby elected leader rewrites no status unchanged in substance.

Two real ``autoscaler run`` processes elect a leader on a Lease of the fake API server.
The standby starts before the leader writes any status, so what its first sighting
showed is stale by the failover; it is told each status the leader writes since
(``WorkloadWatcher.on_status`` → ``KubeTarget.observe_status``). The queue has no
consumer: its readings hold still, so the status is the same in substance before and
after the failover.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from autoscaler.annotations import ANNOTATION_PREFIX, STATUS_ANNOTATION
from tests.fakekube import FakeKubeServer
from tests.fakekube.fixtures import fake_kube as fake_kube
from tests.kubeutil import wait_for, workload

ELECTION = ("--lease-duration=2", "--renew-deadline=1", "--retry-period=0.2")
LEASE = ("leases", "default", "queue-autoscaler-leader")


@contextlib.asynccontextmanager
async def controller(
    fake: FakeKubeServer, redis_url: str, name: str, log: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """``autoscaler run`` as ``name`` (its Lease identity), JSON logs to ``log``; killed
    at the end of the block if still running."""
    kubeconfig = fake.write_kubeconfig(log.with_suffix(".kubeconfig"))
    env = {**os.environ, "POD_NAME": name, "POD_NAMESPACE": "default"}
    with log.open("w") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "autoscaler", "run", "--kubeconfig", str(kubeconfig),
            "--redis-url", redis_url, "--metrics-port", "0", "--log-format", "json",
            *ELECTION, env=env, stdout=out, stderr=out,
        )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def logged(log: Path, event: str) -> list[dict[str, Any]]:
    lines = []
    for line in log.read_text().splitlines():
        with contextlib.suppress(ValueError):
            lines.append(json.loads(line))
    return [line for line in lines if line.get("event") == event]


def holder(fake: FakeKubeServer) -> str | None:
    lease = fake.get(*LEASE)
    return None if lease is None else lease["spec"].get("holderIdentity")


def status(fake: FakeKubeServer) -> dict[str, Any]:
    deployment = fake.get("deployments", "default", "web")
    assert deployment is not None
    text = (deployment["metadata"].get("annotations") or {}).get(STATUS_ANNOTATION)
    return {} if text is None else dict(json.loads(text))


def showing(fake: FakeKubeServer, **fields: object) -> Callable[[], bool]:
    return lambda: all(status(fake).get(k) == v for k, v in fields.items())


def status_writes(fake: FakeKubeServer, since: int) -> list[dict[str, Any]]:
    """The status annotations PATCHed on the Deployment since request ``since``."""
    return [
        json.loads(r.body["metadata"]["annotations"][STATUS_ANNOTATION])
        for r in fake.requests[since:]
        if r.method == "PATCH" and r.resource == "deployments" and not r.subresource
    ]


async def test_a_standby_elected_leader_rewrites_no_status_unchanged_in_substance(
    fake_kube: FakeKubeServer, redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    annotations = {
        ANNOTATION_PREFIX + "redis-list": "jobs",
        ANNOTATION_PREFIX + "messages-per-replica": "10",
        ANNOTATION_PREFIX + "polling-interval": "1",
    }
    fake_kube.create(workload("Deployment", "web", replicas=1, annotations=annotations))
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    async with controller(fake_kube, redis_url, "ctl-a", log_a) as a:
        await wait_for(lambda: holder(fake_kube) == "ctl-a", 30, what="ctl-a leading")
        async with controller(fake_kube, redis_url, "ctl-b", log_b):
            await wait_for(lambda: bool(logged(log_b, "controller started")), 30, what="b up")
            await redis_client.lpush("jobs", *[b"m"] * 30)  # 3 replicas, held from now on
            await wait_for(showing(fake_kube, current=3, reason="DesiredWithinRange"), 30,
                           what="ctl-a's status at 3 replicas")  # fmt: skip
            before = status(fake_kube)
            a.send_signal(signal.SIGKILL)
            await a.wait()
            since = len(fake_kube.requests)
            await wait_for(lambda: holder(fake_kube) == "ctl-b", 30, what="ctl-b leading")
            # ctl-b's first decision: 3 replicas for 30 messages, as ctl-a last wrote; its
            # status write is tried right after it, and the next decision is a second later
            await wait_for(lambda: bool(logged(log_b, "decision")), 30, what="ctl-b decided")
            await redis_client.lpush("jobs", *[b"m"] * 20)  # 50: 5 replicas
            await wait_for(showing(fake_kube, current=5, reason="DesiredWithinRange"), 30,
                           what="ctl-b's status at 5 replicas")  # fmt: skip
    assert logged(log_b, "decision")[0]["desired"] == 3 == before["desired"]
    written = [(s["reason"], s["current"], s["desired"]) for s in status_writes(fake_kube, since)]
    assert ("DesiredWithinRange", 3, 3) not in written, written  # the same: not rewritten
    assert written[-1] == ("DesiredWithinRange", 5, 5)  # a changed one is written
