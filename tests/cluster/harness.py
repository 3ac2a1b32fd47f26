"""What the scenarios share: a worker manifest shaped like ``deploy/examples/worker.yaml``,
the controller as a real ``autoscaler run`` process, and small reads of the cluster.

The worker's pod has the example's two containers: ``processor`` (not run: the test's
``tests.processor.Processor`` stands in for every pod's processor, on loopback) and
``consumer``, whose ``args`` the node emulator runs as ``autoscaler consume ...`` with
``POD_NAME`` from the Downward API, as in the example.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from autoscaler.keys import ConsumerState
from autoscaler.redisqueue import ConsumerInfo, read_registry
from tests.cluster import audit
from tests.cluster.api import Api, Obj, eventually
from tests.cluster.conftest import Cluster
from tests.cluster.node import NodeEmulator
from tests.e2e import LIVE, Proc
from tests.kubeutil import workload
from tests.processor import Processor

AUTOSCALER = Path(sys.executable).parent / "autoscaler"  # the console script
PREFIX = "queue-autoscaler.io/"
STATUS = PREFIX + "status"
ENABLED = PREFIX + "enabled"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
CONTROLLER_NS = "queue-autoscaler"


def consumer_args(redis_url: str, queue: str, forward: str, *extra: str) -> list[str]:
    return [
        "consume",
        f"--redis-url={redis_url}",
        f"--queue={queue}",
        f"--forward={forward}",
        "--heartbeat-interval=0.2",
        "--log-format=json",
        *extra,
    ]


def worker(
    namespace: str,
    name: str,
    args: list[str],
    *,
    replicas: int = 1,
    kind: str = "Deployment",
    grace_s: int = 30,
    **annotations: str,
) -> Obj:
    """A worker Deployment (or StatefulSet) with the example's containers and our annotations
    (keyword ``min_replicas="1"`` → ``queue-autoscaler.io/min-replicas: "1"``)."""
    pod = {
        "terminationGracePeriodSeconds": grace_s,
        "containers": [
            {"name": "processor", "image": "python:3.11-slim"},
            {
                "name": "consumer",
                "image": "queue-autoscaler",
                "args": args,
                "env": [
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
                ],
            },
        ],
    }
    keys = {PREFIX + k.replace("_", "-"): v for k, v in annotations.items()}
    return workload(kind, name, namespace=namespace, replicas=replicas, annotations=keys, pod=pod)


async def start_controller(
    cluster: Cluster,
    workdir: Path,
    redis_url: str,
    namespace: str,
    name: str = "controller",
    *extra: str,
    kubeconfig: Path | None = None,
) -> Proc:
    """``autoscaler run`` as the controller's ServiceAccount, watching ``namespace`` only, its
    Lease in the controller's namespace (where deploy/'s Role grants it)."""
    log = workdir / f"{name}.log"
    with log.open("wb") as handle:
        process = await asyncio.create_subprocess_exec(
            str(AUTOSCALER),
            "run",
            f"--kubeconfig={kubeconfig or cluster.controller_kubeconfig}",
            f"--namespace={namespace}",
            f"--redis-url={redis_url}",
            "--metrics-port=0",
            "--log-format=json",
            *extra,
            stdout=handle,
            stderr=handle,
            env={
                **os.environ,
                "PYTHONUNBUFFERED": "1",
                "PYTHONFAULTHANDLER": "1",
                "POD_NAME": name,
                "POD_NAMESPACE": CONTROLLER_NS,
            },
        )
    LIVE.add(process)
    return Proc(process, log)


def events_of(proc: Proc, event: str) -> list[dict[str, Any]]:
    return [line for line in proc.lines() if line.get("event") == event]


def scalings(proc: Proc) -> list[dict[str, Any]]:
    """The controller's scaling decisions carried out (its "scaled" lines with a direction;
    the target logs its /scale write under the same event name)."""
    return [line for line in events_of(proc, "scaled") if "direction" in line]


async def spec_replicas(api: Api, namespace: str, name: str, plural: str = "deployments") -> int:
    scale = await api.get(f"/apis/apps/v1/namespaces/{namespace}/{plural}/{name}/scale")
    return int(scale["spec"].get("replicas") or 0)


async def ready_pods(api: Api, namespace: str, selector: str) -> list[str]:
    pods = await api.items(f"/api/v1/namespaces/{namespace}/pods", selector)
    return sorted(
        p["metadata"]["name"]
        for p in pods
        if not p["metadata"].get("deletionTimestamp")
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in (p.get("status") or {}).get("conditions") or []
        )
    )


async def pods_of(api: Api, namespace: str, selector: str) -> list[Obj]:
    return await api.items(f"/api/v1/namespaces/{namespace}/pods", selector)


async def k8s_events(api: Api, namespace: str, name: str) -> list[Obj]:
    events = await api.items(f"/api/v1/namespaces/{namespace}/events")
    return [e for e in events if e["involvedObject"].get("name") == name]


def ids_of(count: int, prefix: str = "m") -> list[bytes]:
    """``count`` unique messages (JSON bodies carrying an id), to count by id."""
    return [json.dumps({"id": f"{prefix}-{i}"}).encode() for i in range(count)]


@dataclass
class DrainWitness:
    """What each pod still held when Kubernetes began removing it (``on_terminating``): its
    consumer's registry entry, read from Redis at the moment the ``deletionTimestamp`` is
    first seen, before the SIGTERM."""

    redis: aioredis.Redis
    queue: str
    seen: dict[str, list[ConsumerInfo]] = field(default_factory=dict)

    async def on_terminating(self, pod: str) -> None:
        self.seen[pod] = [c for c in await read_registry(self.redis, self.queue) if c.pod == pod]

    def undrained(self) -> dict[str, list[tuple[object, object, bool]]]:
        """The removed pods whose consumer had not drained: alive, not ``drained``, or
        still holding messages."""
        return {
            pod: [(c.state, c.in_flight, c.lease_alive) for c in entries]
            for pod, entries in self.seen.items()
            if any(
                c.lease_alive and (c.state is not ConsumerState.DRAINED or c.in_flight)
                for c in entries
            )
        }


async def pod_costs(
    api: Api, namespace: str, selector: str = "app=worker"
) -> dict[str, str | None]:
    """Each live pod's ``pod-deletion-cost`` annotation (None: none)."""
    return {
        p["metadata"]["name"]: (p["metadata"].get("annotations") or {}).get(DELETION_COST)
        for p in await pods_of(api, namespace, selector)
        if not p["metadata"].get("deletionTimestamp")
    }


async def marked(api: Api, namespace: str, count: int) -> list[str]:
    """The pods marked −2³¹ by a drain, once there are ``count`` of them."""
    costs = await pod_costs(api, namespace)
    names = sorted(n for n, c in costs.items() if c == str(-(2**31)))
    return names if len(names) == count else []


async def annotate(
    api: Api, namespace: str, name: str, plural: str = "deployments", **values: str
) -> None:
    """Change the workload's queue-autoscaler.io/ annotations, as its owner would."""
    patch = {
        "metadata": {"annotations": {PREFIX + k.replace("_", "-"): v for k, v in values.items()}}
    }
    await api.patch(f"/apis/apps/v1/namespaces/{namespace}/{plural}/{name}", patch)


def controller_requests(cluster: Cluster, namespace: str) -> list[audit.Request]:
    """The controller's requests in ``namespace`` (the tests' own httpx calls left out)."""
    return [
        r
        for r in audit.read(cluster.plane.audit_log)
        if r.namespace == namespace and not r.user_agent.startswith("python-httpx")
    ]


async def processed_all(processor: Processor, ids: list[bytes]) -> bool:
    return set(processor.accepted) >= set(ids)


@contextlib.asynccontextmanager
async def controlled(
    cluster: Cluster,
    api: Api,
    node: NodeEmulator,
    redis_url: str,
    manifest: Obj,
    *,
    ready: int,
    before: Callable[[], Awaitable[None]] | None = None,
) -> AsyncIterator[Proc]:
    """Create ``manifest``, run its pods on ``node`` until ``ready`` are Ready, run
    ``before`` (e.g. load the queue), then the controller; stop both at the end, asserting
    that the controller exited cleanly and the node saw no error."""
    await api.create(manifest)
    async with node.running_in_background():
        await eventually(
            lambda: _n_ready(api, node.namespace, ready), 60, f"{ready} pods ready", step_s=0.1
        )
        if before is not None:
            await before()
        controller = await start_controller(cluster, node.workdir, redis_url, node.namespace)
        try:
            yield controller
        finally:
            code = await controller.stop()
        assert code == 0, controller.tail()
    assert not node.errors, node.errors


async def _n_ready(api: Api, namespace: str, count: int) -> bool:
    return len(await ready_pods(api, namespace, "app=worker")) == count


async def live_pods(api: Api, namespace: str) -> list[str]:
    """The pods not terminating."""
    return sorted(
        p["metadata"]["name"]
        for p in await pods_of(api, namespace, "app=worker")
        if not p["metadata"].get("deletionTimestamp")
    )


async def settled_at(api: Api, namespace: str, replicas: int, plural: str = "deployments") -> bool:
    """spec.replicas is ``replicas`` and exactly that many pods exist (none terminating)."""
    if await spec_replicas(api, namespace, "worker", plural) != replicas:
        return False
    return len(await pods_of(api, namespace, "app=worker")) == replicas


def undrained_events(events: list[Obj]) -> list[str]:
    return [e["message"] for e in events if e["reason"] == "UndrainedPodRemoved"]


def pushing(
    redis: aioredis.Redis, ids: list[bytes], processor: Processor | None = None
) -> Callable[[], Awaitable[None]]:
    """A ``controlled(before=...)`` step: push ``ids``; with ``processor`` (scripted to hang),
    wait until it holds every one of them (each consumer full, nothing left queued)."""

    async def push() -> None:
        await redis.lpush("jobs", *ids)
        if processor is not None:

            async def held() -> bool:
                return processor.in_progress == len(ids)

            await eventually(held, 30, f"{len(ids)} messages held")

    return push
