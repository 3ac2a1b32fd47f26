"""Helpers for the ``autoscaler.kube`` tests: manifests, a connected client, polling.

The tests talk to ``tests.fakekube`` over real HTTP with the real ``kubernetes.aio``
client; ``wait_for`` polls with a deadline instead of sleeping as synchronisation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest_asyncio
from prometheus_client import CollectorRegistry

from autoscaler.annotations import ENABLED_LABEL
from autoscaler.kube import ClientSettings, KubeClient
from autoscaler.metrics import ControllerMetrics
from tests.fakekube import FakeKubeServer

Obj = dict[str, Any]

# Fast retries so fault-injection tests take milliseconds, not seconds.
FAST = ClientSettings(backoff_initial_s=0.01, backoff_max_s=0.05, request_timeout_s=5.0)


def workload(
    kind: str,
    name: str,
    *,
    namespace: str = "default",
    replicas: int = 1,
    enabled: bool = True,
    annotations: dict[str, str] | None = None,
    pod: Obj | None = None,
) -> Obj:
    """A Deployment or StatefulSet manifest with pods labelled ``app=<name>``; ``pod``: the
    pod template's spec (default: one busybox container)."""
    labels = {ENABLED_LABEL: "true"} if enabled else {}
    spec: Obj = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": pod or {"containers": [{"name": "worker", "image": "busybox"}]},
        },
    }
    if kind == "StatefulSet":
        spec["serviceName"] = name
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": annotations or {},
        },
        "spec": spec,
    }


def hpa(name: str, target_kind: str, target: str, *, namespace: str = "default") -> Obj:
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": target_kind, "name": target},
            "minReplicas": 1,
            "maxReplicas": 10,
        },
    }


async def wait_for(
    predicate: Callable[[], object], timeout_s: float = 5.0, what: str = "condition"
) -> None:
    """Poll ``predicate`` every 10 ms until it is truthy; fail after ``timeout_s`` of loop
    time (under ``looptime`` that is fake time: the deadline is then exact)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)


async def connect(
    server: FakeKubeServer,
    settings: ClientSettings = FAST,
    metrics: ControllerMetrics | None = None,
) -> KubeClient:
    assert server.kubeconfig is not None
    return await KubeClient.connect(server.kubeconfig, settings=settings, metrics=metrics)


@pytest_asyncio.fixture
async def metrics() -> ControllerMetrics:
    return ControllerMetrics(CollectorRegistry())


@pytest_asyncio.fixture
async def kube(fake_kube: FakeKubeServer, metrics: ControllerMetrics) -> AsyncIterator[KubeClient]:
    client = await connect(fake_kube, metrics=metrics)
    yield client
    await client.close()


def requests_of(server: FakeKubeServer, verb: str, path_part: str = "") -> list[Any]:
    """Recorded requests with this RBAC verb whose path contains ``path_part``."""
    return [r for r in server.requests if r.verb == verb and path_part in r.path]


async def stop(task: asyncio.Task[Any]) -> None:
    """Cancel a task and wait for it, swallowing only its cancellation."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
