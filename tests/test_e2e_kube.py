"""``autoscaler run`` as a real process against the fake API server and a real Redis."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import redis.asyncio as aioredis

from autoscaler.annotations import STATUS_ANNOTATION
from tests.e2e import controller, deployment, eventually
from tests.e2e import fake_kube as fake_kube  # the fixture, RBAC-checked
from tests.fakekube import FakeKubeServer

FAST = {
    "messages_per_replica": "50",
    "polling_interval": "1s",
    "scale_up_max_pods": "100",
    "scale_down_stabilization": "2s",
    "cooldown": "2s",
    "min_replicas": "1",
}


def replicas(kube: FakeKubeServer, name: str) -> int:
    obj = kube.get("deployments", "default", name)
    assert obj is not None
    return int(obj["spec"]["replicas"])


def status(kube: FakeKubeServer, name: str) -> dict[str, object] | None:
    obj = kube.get("deployments", "default", name)
    text = (obj or {}).get("metadata", {}).get("annotations", {}).get(STATUS_ANNOTATION)
    return json.loads(text) if text else None


async def test_scale_up_within_one_interval_and_back_to_min(
    fake_kube: FakeKubeServer, redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    fake_kube.create(deployment("worker", 1, redis_list="jobs", **FAST))
    proc = await controller(tmp_path, fake_kube.kubeconfig, redis_url)
    try:
        await eventually(
            lambda: status(fake_kube, "worker") is not None, 30, "first status", (proc,)
        )
        logged = len(proc.lines())
        await redis_client.lpush("jobs", *[f"m{i}" for i in range(500)])
        await eventually(lambda: replicas(fake_kube, "worker") == 10, 30, "10 replicas", (proc,))
        # Within one polling interval, counted in the controller's own cycles: a cycle that
        # read the backlog and decided anything else would log its decision (the reason
        # changes with the backlog), so the first decision logged after the push is the
        # scale-up, straight to 10 (one /scale write, checked below).
        decided = [
            (line["reason"], line["current"], line["desired"])
            for line in proc.lines()[logged:]
            if line.get("event") == "decision" and line.get("workload") == "worker"
        ]
        assert decided[:1] == [("ScaleUp", 1, 10)], decided
        assert len(fake_kube.list_pods("default", "app=worker")) == 10
        # The status annotation is the lowest-priority write (after /scale, coalesced):
        # it follows the scale, not ahead of it.
        await eventually(
            lambda: (status(fake_kube, "worker") or {}).get("desired") == 10, 10,
            "the status to show 10 desired", (proc,),
        )  # fmt: skip
        await redis_client.delete("jobs")
        await eventually(lambda: replicas(fake_kube, "worker") == 1, 15, "back to min", (proc,))

        def reasons() -> set[str]:
            return {e["reason"] for e in fake_kube.events("default")}

        # The Event is recorded once /scale has answered: poll for it.
        await eventually(lambda: {"ScaleUp", "TooFewReplicas"} <= reasons(), 5, "events", (proc,))
        scale_writes = [
            r for r in fake_kube.requests if r.subresource == "scale" and r.verb == "patch"
        ]
        assert len(scale_writes) == 2  # up once, down once: nothing else
        # A quiet steady state writes nothing.
        before = len(
            [
                r
                for r in fake_kube.requests
                if r.verb in ("patch", "update", "create") and r.resource != "leases"
            ]
        )
        await eventually(
            lambda: sum(1 for line in proc.lines() if line.get("event") == "decision") > 0,
            5,
            "decisions",
            (proc,),
        )
        polled = len(proc.lines())
        await eventually(lambda: len(proc.lines()) >= polled, 3, "more time", (proc,))
        after = len(
            [
                r
                for r in fake_kube.requests
                if r.verb in ("patch", "update", "create") and r.resource != "leases"
            ]
        )
        assert after == before
    finally:
        assert await proc.stop() == 0


async def test_invalid_annotation_is_an_event_and_others_still_scale(
    fake_kube: FakeKubeServer, redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    fake_kube.create(deployment("bad", 2, redis_list="bad", **{**FAST, "max_replicas": "lots"}))
    fake_kube.create(deployment("good", 1, redis_list="good", **FAST))
    await redis_client.lpush("bad", *["x"] * 500)
    await redis_client.lpush("good", *["x"] * 200)
    proc = await controller(tmp_path, fake_kube.kubeconfig, redis_url)
    try:
        await eventually(lambda: replicas(fake_kube, "good") == 4, 30, "good scaled", (proc,))
        warnings = [e for e in fake_kube.events("default") if e["involvedObject"]["name"] == "bad"]
        assert warnings, proc.tail()
        assert warnings[0]["type"] == "Warning" and warnings[0]["reason"] == "InvalidSpec"
        assert "queue-autoscaler.io/max-replicas" in warnings[0]["message"]
        assert replicas(fake_kube, "bad") == 2
        assert not [r for r in fake_kube.requests if r.name == "bad" and r.verb == "patch"]
        assert any(
            line.get("event") == "invalid spec"
            and line.get("key") == "queue-autoscaler.io/max-replicas"
            for line in proc.lines()
        )
    finally:
        assert await proc.stop() == 0


async def test_api_faults_are_retried_and_the_loop_survives(
    fake_kube: FakeKubeServer, redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    fake_kube.create(deployment("worker", 1, redis_list="jobs", **FAST))
    proc = await controller(tmp_path, fake_kube.kubeconfig, redis_url)
    try:
        await eventually(
            lambda: status(fake_kube, "worker") is not None, 30, "first status", (proc,)
        )
        fake_kube.inject_faults(429, 2, methods={"PATCH"}, retry_after_s=0)
        fake_kube.inject_faults(500, 2, methods={"PATCH"})
        await redis_client.lpush("jobs", *["x"] * 300)
        await eventually(lambda: replicas(fake_kube, "worker") == 6, 20, "6 replicas", (proc,))
        fake_kube.inject_faults(500, 3, methods={"GET"})
        await redis_client.lpush("jobs", *["x"] * 200)
        await eventually(lambda: replicas(fake_kube, "worker") == 10, 20, "10 replicas", (proc,))
        codes = {r.status for r in fake_kube.requests}
        assert {429, 500} <= codes
        assert proc.process.returncode is None
    finally:
        assert await proc.stop() == 0


async def test_only_the_leader_writes_and_the_standby_takes_over(
    fake_kube: FakeKubeServer, redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    fake_kube.create(deployment("worker", 1, redis_list="jobs", **FAST))
    lease = ("--lease-duration", "3", "--renew-deadline", "2", "--retry-period", "0.3")
    first = await controller(tmp_path, fake_kube.kubeconfig, redis_url, "first", *lease)
    await eventually(lambda: status(fake_kube, "worker") is not None, 30, "first leads", (first,))
    second = await controller(tmp_path, fake_kube.kubeconfig, redis_url, "second", *lease)
    try:

        def holder() -> str | None:
            obj = fake_kube.get("leases", "default", "queue-autoscaler-leader")
            return (obj or {}).get("spec", {}).get("holderIdentity")

        assert holder() == "first"
        await eventually(
            lambda: any(line.get("event") == "kube client" for line in second.lines()),
            30,
            "second started",
            (second,),
        )
        await redis_client.lpush("jobs", *["x"] * 300)
        await eventually(lambda: replicas(fake_kube, "worker") == 6, 10, "6", (first, second))
        scale_writes = [
            r for r in fake_kube.requests if r.subresource == "scale" and r.verb == "patch"
        ]
        assert len(scale_writes) == 1  # one writer
        assert await first.stop(signal.SIGKILL) != 0  # a crash: the lease is not released
        killed = len(fake_kube.requests)
        await eventually(lambda: holder() == "second", 30, "takeover", (second,))
        # Counted in the second's own attempts (one Lease read each retry period), not in
        # seconds: it takes over on its first attempt once the lease duration has passed
        # unrenewed. A slow machine spaces the attempts out; it never adds any.
        attempts = [
            r for r in fake_kube.requests[killed:] if r.resource == "leases" and r.verb == "get"
        ]
        assert len(attempts) <= math.ceil(3 / 0.3) + 2, len(attempts)
        await redis_client.lpush("jobs", *["x"] * 200)
        await eventually(lambda: replicas(fake_kube, "worker") == 10, 10, "10", (second,))
        scale_writes = [
            r for r in fake_kube.requests if r.subresource == "scale" and r.verb == "patch"
        ]
        assert len(scale_writes) == 2
    finally:
        await first.stop(signal.SIGKILL)
        assert await second.stop() == 0
    # A clean stop releases the lease.
    obj = fake_kube.get("leases", "default", "queue-autoscaler-leader")
    assert not (obj or {}).get("spec", {}).get("holderIdentity")
