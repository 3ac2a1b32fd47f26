"""Scenario 9 on the real control plane: the controller's watch survives an etcd compaction.

The controller reaches the apiserver through a proxy. The test cuts it, creates a workload
while the controller is blind, and compacts etcd past everything the controller has seen
(through etcd's gRPC gateway, ``POST /v3/kv/compaction``). On reconnect the watch resumes
from a compacted revision: the apiserver answers 410 Gone (the watch cache is off for
Deployments, see ``controlplane``), the controller relists, and the workload it missed is
scaled.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import httpx

from tests.cluster.api import Api, Obj, eventually
from tests.cluster.conftest import Cluster
from tests.cluster.harness import STATUS, events_of, spec_replicas, start_controller, worker
from tests.cluster.proxy import Proxy


async def _compact(etcd_url: str) -> int:
    """Compact etcd at its current revision; returns that revision."""
    async with httpx.AsyncClient(base_url=etcd_url, timeout=10) as etcd:
        key = base64.b64encode(b"/registry/").decode()
        header = (await etcd.post("/v3/kv/range", json={"key": key, "limit": 1})).json()
        revision = int(header["header"]["revision"])
        reply = await etcd.post("/v3/kv/compaction", json={"revision": revision, "physical": True})
        reply.raise_for_status()
        return revision


async def test_watch_relists_after_a_compaction_and_misses_no_workload(
    cluster: Cluster, api: Api, namespace: str, redis_url: str, tmp_path: Path
) -> None:
    await api.create(_workload(namespace, "seen", min_replicas=1))
    proxy = Proxy(cluster.plane.apiserver_port)
    await proxy.start()
    kubeconfig = cluster.plane.kubeconfig_via(tmp_path / "via-proxy", proxy.url, cluster.token)
    controller = await start_controller(
        cluster, tmp_path, redis_url, namespace, "controller", "--no-leader-elect",
        kubeconfig=kubeconfig,
    )  # fmt: skip
    try:
        path = f"/apis/apps/v1/namespaces/{namespace}/deployments"
        await eventually(
            lambda: _has_status(api, f"{path}/seen"), 30, "the controller to see 'seen'"
        )
        proxy.cut()
        started = time.monotonic()
        await api.create(_workload(namespace, "missed", min_replicas=2))
        await _compact(cluster.plane.etcd_url)
        proxy.resume()
        await eventually(
            lambda: _replicas(api, namespace, "missed", 2), 30, "'missed' scaled to min 2"
        )
        recovered_s = time.monotonic() - started
        relists = [
            e for e in events_of(controller, "watch expired, relisting")
            if e.get("scope") == f"Deployment in {namespace}"
        ]  # fmt: skip
        assert relists, controller.tail()
    finally:
        await proxy.aclose()
        assert await controller.stop() == 0, controller.tail()
    print(f"\ncompaction: 410 → relist → missed workload scaled {recovered_s:.2f} s after the cut")


def _workload(namespace: str, name: str, *, min_replicas: int) -> Obj:
    return worker(
        namespace,
        name,
        ["consume"],
        redis_list="jobs",
        messages_per_replica="10",
        polling_interval="1s",
        min_replicas=str(min_replicas),
        max_replicas="5",
    )


async def _has_status(api: Api, path: str) -> bool:
    return STATUS in ((await api.get(path))["metadata"].get("annotations") or {})


async def _replicas(api: Api, namespace: str, name: str, count: int) -> bool:
    return await spec_replicas(api, namespace, name) == count
