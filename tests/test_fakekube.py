"""The fake API server, checked with the real clients: kubernetes.aio over HTTP, and kubectl."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from kubernetes.aio import client, config, watch
from kubernetes.aio.client.exceptions import ApiException

from tests.fakekube import FakeKubeServer, deletion_cost, rbac_allows, request_info
from tests.fakekube import fixtures as _fixtures
from tests.fakekube.patch import strategic_merge_patch

fake_kube = _fixtures.fake_kube  # the fixture, under its name in this module

NS = "work"
COST = "controller.kubernetes.io/pod-deletion-cost"


def deployment(name: str = "web", replicas: int = 3, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS, "annotations": {},
                     "labels": {"queue-autoscaler.io/enabled": "true", **labels}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name, "tier": "worker"}},
                              "spec": {"containers": [{"name": "w", "image": "busybox"}]}}},
    }


@pytest_asyncio.fixture
async def api(fake_kube: FakeKubeServer) -> AsyncIterator[client.ApiClient]:
    cfg = client.Configuration()
    assert fake_kube.kubeconfig is not None
    load_kube_config = loose(config.load_kube_config)
    await load_kube_config(config_file=str(fake_kube.kubeconfig), client_configuration=cfg)
    async with client.ApiClient(cfg) as api_client:
        yield api_client


Kube = FakeKubeServer


def status_of(error: ApiException) -> dict[str, Any]:
    """The Status object an API error carried."""
    status: dict[str, Any] = json.loads(error.body or "{}")
    return status


def loose(api_object: object) -> Any:
    """kubernetes.aio's models make every field Optional and its methods want models where
    dicts work too: the tests read results as Any rather than assert on each level."""
    return api_object


# ---- workloads, /scale and the ReplicaSet's choice of victims ---------------------------


async def test_deployment_makes_replicaset_and_pods(fake_kube: Kube, api: client.ApiClient) -> None:
    apps, core = loose(client.AppsV1Api(api)), loose(client.CoreV1Api(api))
    created = await apps.create_namespaced_deployment(NS, deployment())
    assert created.metadata.uid and created.metadata.generation == 1

    pods = await core.list_namespaced_pod(NS, label_selector="app=web")
    assert len(pods.items) == 3
    rs = (await apps.list_namespaced_replica_set(NS)).items[0]
    assert rs.metadata.owner_references[0].uid == created.metadata.uid
    assert rs.spec.replicas == 3 and rs.status.ready_replicas == 3
    for pod in pods.items:
        assert pod.metadata.name.startswith(rs.metadata.name + "-")
        assert pod.metadata.owner_references[0].name == rs.metadata.name
        assert pod.status.phase == "Running"
        assert {c.type: c.status for c in pod.status.conditions}["Ready"] == "True"
    assert sorted(p.metadata.creation_timestamp for p in pods.items) == sorted(
        {p.metadata.creation_timestamp for p in pods.items})  # strictly ordered

    scale = await apps.read_namespaced_deployment_scale("web", NS)
    assert (scale.kind, scale.spec.replicas, scale.status.replicas) == ("Scale", 3, 3)
    assert scale.status.selector == "app=web"
    status = (await apps.read_namespaced_deployment("web", NS)).status
    assert (status.replicas, status.ready_replicas, status.available_replicas,
            status.updated_replicas, status.observed_generation) == (3, 3, 3, 3, 1)


async def test_scale_down_keeps_the_costliest_pods(fake_kube: Kube,
                                                   api: client.ApiClient) -> None:
    apps, core = loose(client.AppsV1Api(api)), loose(client.CoreV1Api(api))
    await apps.create_namespaced_deployment(NS, deployment(replicas=4))
    names = fake_kube.pod_names(NS, "app=web")
    costs = {names[0]: "-5", names[1]: "100", names[2]: "7", names[3]: "not-a-number"}
    key = COST.replace("/", "~1")  # JSON pointer escaping: annotation keys contain '/'
    for name, cost in costs.items():
        await core.patch_namespaced_pod(name, NS, [
            {"op": "add", "path": "/metadata/annotations", "value": {}},
            {"op": "add", "path": f"/metadata/annotations/{key}", "value": cost}])
    assert fake_kube.deletion_order(NS, "app=web") == [names[0], names[3], names[2], names[1]]

    scale = await apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 2}})
    assert scale.spec.replicas == 2
    assert fake_kube.pod_names(NS, "app=web") == [names[1], names[2]]
    await apps.patch_namespaced_deployment_scale("web", NS, [
        {"op": "replace", "path": "/spec/replicas", "value": 1}])
    assert fake_kube.pod_names(NS, "app=web") == [names[1]]


async def test_equal_costs_newest_first_and_not_ready_before_ready(
        fake_kube: Kube, api: client.ApiClient) -> None:
    apps = loose(client.AppsV1Api(api))
    await apps.create_namespaced_deployment(NS, deployment(replicas=5))
    p = fake_kube.pod_names(NS, "app=web")  # oldest first
    fake_kube.set_pod_ready(NS, p[0], False)  # oldest, but not ready: goes first
    fake_kube.set_pod_restarts(NS, p[1], 3)  # more restarts: before the newer ready ones
    assert fake_kube.deletion_order(NS, "app=web") == [p[0], p[1], p[4], p[3], p[2]]
    await apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 3}})
    assert fake_kube.pod_names(NS, "app=web") == [p[2], p[3], p[4]]
    await apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 2}})
    assert fake_kube.pod_names(NS, "app=web") == [p[2], p[3]]
    status = (await apps.read_namespaced_deployment("web", NS)).status
    assert (status.replicas, status.ready_replicas) == (2, 2)

    # Pending and unscheduled pods are the very first victims.
    await apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 4}})
    q = fake_kube.pod_names(NS, "app=web")
    fake_kube.set_pod_phase(NS, q[0], "Pending")
    fake_kube.set_pod_phase(NS, q[1], "Pending", scheduled=False)
    assert fake_kube.deletion_order(NS, "app=web")[:2] == [q[1], q[0]]
    assert (await apps.read_namespaced_deployment("web", NS)).status.ready_replicas == 2


def test_deletion_cost_parsing() -> None:
    def pod(value: str | None) -> dict[str, Any]:
        annotations = {} if value is None else {COST: value}
        return {"metadata": {"name": "p", "annotations": annotations}}

    cases = {None: 0, "5": 5, "-7": -7, "+3": 3, "2147483647": 2**31 - 1,
             "2147483648": 0, "1.5": 0, " 4": 0, "x": 0}
    assert {k: deletion_cost(pod(k)) for k in cases} == cases


async def test_statefulset_removes_highest_ordinal(fake_kube: Kube,
                                                   api: client.ApiClient) -> None:
    apps = loose(client.AppsV1Api(api))
    sts = deployment("db", replicas=3)
    sts["kind"] = "StatefulSet"
    sts["spec"]["serviceName"] = "db"
    await apps.create_namespaced_stateful_set(NS, sts)
    assert fake_kube.pod_names(NS, "app=db") == ["db-0", "db-1", "db-2"]
    fake_kube.patch("pods", NS, "db-2", {"metadata": {"annotations": {COST: "1000"}}})
    await apps.patch_namespaced_stateful_set_scale("db", NS, {"spec": {"replicas": 1}})
    assert fake_kube.pod_names(NS, "app=db") == ["db-0"]
    scale = await apps.read_namespaced_stateful_set_scale("db", NS)
    assert (scale.spec.replicas, scale.status.replicas, scale.status.selector) == (1, 1, "app=db")


async def test_statefulset_ordered_ready_removes_one_at_a_time_and_waits_for_health(
        fake_kube: Kube, api: client.ApiClient) -> None:
    apps = loose(client.AppsV1Api(api))
    sts = deployment("db", replicas=4)
    sts["kind"] = "StatefulSet"
    sts["spec"]["serviceName"] = "db"
    await apps.create_namespaced_stateful_set(NS, sts)
    fake_kube.set_pod_ready(NS, "db-0", False)
    await apps.patch_namespaced_stateful_set_scale("db", NS, {"spec": {"replicas": 1}})
    assert fake_kube.pod_names(NS, "app=db") == ["db-0", "db-1", "db-2", "db-3"]  # stalled
    deleted: list[str] = []
    fake_kube.store.listeners.append(
        lambda e: deleted.append(e.obj["metadata"]["name"]) if e.type == "DELETED" else None)
    fake_kube.set_pod_ready(NS, "db-0", True)  # healthy again: the removals resume
    assert deleted == ["db-3", "db-2", "db-1"]  # one at a time, highest ordinal first
    assert fake_kube.pod_names(NS, "app=db") == ["db-0"]
    fake_kube.set_pod_ready(NS, "db-0", False)
    await apps.patch_namespaced_stateful_set_scale("db", NS, {"spec": {"replicas": 3}})
    assert fake_kube.pod_names(NS, "app=db") == ["db-0"]  # no new ordinal past an unready one


async def test_generation_gc_and_replacement_pods(fake_kube: Kube, api: client.ApiClient) -> None:
    apps, core = loose(client.AppsV1Api(api)), loose(client.CoreV1Api(api))
    await apps.create_namespaced_deployment(NS, deployment(replicas=2))
    d = await apps.patch_namespaced_deployment("web", NS, {"spec": {"replicas": 3}},
                                               _content_type="application/merge-patch+json")
    assert d.metadata.generation == 2
    d = await apps.patch_namespaced_deployment(
        "web", NS, {"metadata": {"annotations": {"queue-autoscaler.io/min-replicas": "1"}}})
    assert d.metadata.generation == 2  # metadata only: no new generation
    assert (await apps.read_namespaced_deployment("web", NS)).status.observed_generation == 2
    rs = fake_kube.list_objects("replicasets", NS)[0]  # annotations copied onto the RS
    assert rs["metadata"]["annotations"]["queue-autoscaler.io/min-replicas"] == "1"

    victim = fake_kube.pod_names(NS)[0]
    await core.delete_namespaced_pod(victim, NS)
    names = fake_kube.pod_names(NS)
    assert len(names) == 3 and victim not in names  # the ReplicaSet replaced it

    await apps.delete_namespaced_deployment("web", NS)
    assert fake_kube.list_pods(NS) == [] and fake_kube.list_objects("rs", NS) == []


# ---- list, selectors, watch ---------------------------------------------------------------


async def test_list_selectors_and_pagination(fake_kube: Kube, api: client.ApiClient) -> None:
    apps, core = loose(client.AppsV1Api(api)), loose(client.CoreV1Api(api))
    await apps.create_namespaced_deployment(NS, deployment("a", 1, team="x"))
    await apps.create_namespaced_deployment(NS, deployment("b", 1, team="y"))
    await apps.create_namespaced_deployment(NS, deployment("c", 1))
    other = deployment("a", 1)
    other["metadata"]["namespace"] = "other"
    other["metadata"]["labels"] = {}
    await apps.create_namespaced_deployment("other", other)

    async def names(selector: str = "", fields: str = "", ns: str | None = NS) -> list[str]:
        found = await (apps.list_namespaced_deployment(ns, label_selector=selector,
                                                       field_selector=fields)
                       if ns else apps.list_deployment_for_all_namespaces(
                           label_selector=selector, field_selector=fields))
        return [f"{d.metadata.namespace}/{d.metadata.name}" for d in found.items]

    assert await names("queue-autoscaler.io/enabled=true", ns=None) == [
        "work/a", "work/b", "work/c"]
    assert await names("team in (x,z)") == ["work/a"]
    assert await names("team notin (x)") == ["work/b", "work/c"]
    assert await names("team!=y,queue-autoscaler.io/enabled") == ["work/a", "work/c"]
    assert await names("!team") == ["work/c"]
    assert await names("team") == ["work/a", "work/b"]
    assert await names(fields="metadata.name=a", ns=None) == ["other/a", "work/a"]
    assert await names(fields="metadata.namespace!=work", ns=None) == ["other/a"]
    with pytest.raises(ApiException) as bad:
        await names("team in (x")
    assert bad.value.status == 400
    assert len((await core.list_namespaced_pod(NS, label_selector="tier=worker")).items) == 3

    page = await apps.list_namespaced_deployment(NS, limit=2)
    assert [d.metadata.name for d in page.items] == ["a", "b"]
    assert page.metadata.remaining_item_count == 1 and page.metadata.resource_version
    rest = await apps.list_namespaced_deployment(NS, limit=2, _continue=page.metadata._continue)
    assert [d.metadata.name for d in rest.items] == ["c"] and not rest.metadata._continue


async def test_watch_with_selector_resume_and_live(fake_kube: Kube, api: client.ApiClient) -> None:
    apps = loose(client.AppsV1Api(api))
    await apps.create_namespaced_deployment(NS, deployment("a", 1))
    listed = await apps.list_namespaced_deployment(NS, label_selector="queue-autoscaler.io/enabled")
    rv = listed.metadata.resource_version
    await apps.create_namespaced_deployment(NS, deployment("b", 1))
    await apps.create_namespaced_deployment(NS, deployment("x", 1, **{"other": "1"}))
    await apps.patch_namespaced_deployment("x", NS, {"metadata": {"labels": {
        "queue-autoscaler.io/enabled": None}}})  # leaves the selection: DELETED for the watch

    async def live_writes() -> None:
        await fake_kube.wait_for_watches()
        await apps.patch_namespaced_deployment_scale("a", NS, {"spec": {"replicas": 2}})
        await apps.delete_namespaced_deployment("b", NS)

    seen: list[tuple[str, str]] = []
    writer = asyncio.create_task(live_writes())
    async with loose(watch.Watch)() as w:
        async for event in w.stream(apps.list_namespaced_deployment, NS, resource_version=rv,
                                    label_selector="queue-autoscaler.io/enabled=true",
                                    timeout_seconds=5):
            seen.append((event["type"], event["object"].metadata.name))
            if ("DELETED", "b") in seen:
                w.stop()
    await writer
    compact = [s for i, s in enumerate(seen) if i == 0 or s != seen[i - 1]]
    assert compact[:4] == [("ADDED", "b"), ("MODIFIED", "b"), ("ADDED", "x"), ("MODIFIED", "x")]
    assert ("DELETED", "x") in compact and ("MODIFIED", "a") in compact
    assert compact[-1] == ("DELETED", "b")


async def test_watch_from_expired_resource_version(fake_kube: Kube, api: client.ApiClient) -> None:
    core = loose(client.CoreV1Api(api))
    old = fake_kube.resource_version
    fake_kube.history_limit = 2
    for i in range(3):
        fake_kube.create({"apiVersion": "v1", "kind": "Event", "metadata": {"name": f"e{i}"},
                          "involvedObject": {"kind": "Pod", "name": "p"}})
    # kubernetes.aio turns the in-stream ERROR event into ApiException(410), and (without
    # timeout_seconds) retries once with the same resourceVersion before raising it.
    for kwargs in ({"timeout_seconds": 5}, {}):
        async with loose(watch.Watch)() as w:
            with pytest.raises(ApiException) as expired:
                async for _ in w.stream(core.list_namespaced_event, "default",
                                        resource_version=old, **kwargs):
                    pass
        assert expired.value.status == 410 and "Expired" in str(expired.value.reason)
    # On the wire: HTTP 200, then one ERROR event holding a 410 Status.
    async with aiohttp.ClientSession() as http, http.get(
            f"{fake_kube.url}/api/v1/namespaces/default/events",
            params={"watch": "1", "resourceVersion": old}) as resp:
        assert resp.status == 200
        event = json.loads(await resp.content.readline())
    assert event["type"] == "ERROR"
    assert (event["object"]["kind"], event["object"]["code"], event["object"]["reason"]) == (
        "Status", 410, "Expired")


@pytest.mark.parametrize("spelling", ["true", "True", "1"])
async def test_watch_spellings_bookmarks_and_stop(spelling: str) -> None:
    async with FakeKubeServer() as kube:
        kube.create(deployment("a", 0))
        params = {"watch": spelling, "allowWatchBookmarks": "true"}
        async with aiohttp.ClientSession() as http, http.get(
                f"{kube.url}/apis/apps/v1/deployments", params=params) as resp:
            first = json.loads(await resp.content.readline())
            assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "a")
            kube.bookmark()
            mark = json.loads(await resp.content.readline())
            assert mark["type"] == "BOOKMARK"
            assert mark["object"]["metadata"]["resourceVersion"] == kube.resource_version
            await kube.stop()  # ends the open stream: no leaked tasks, EOF for the client
            assert await resp.content.read() == b""
    assert kube.requests[-1].verb == "watch"


async def test_watch_timeout(fake_kube: Kube) -> None:
    fake_kube.create(deployment("a", 0))
    async with aiohttp.ClientSession() as http, http.get(
            f"{fake_kube.url}/apis/apps/v1/namespaces/{NS}/deployments",
            params={"watch": "true", "timeoutSeconds": "0.05"}) as resp:
        lines = (await resp.content.read()).splitlines()  # ends by itself
    assert [json.loads(line)["type"] for line in lines] == ["ADDED"]


# ---- writes: conflicts, patches, generateName, Leases, Events, HPAs ----------------------


async def test_stale_put_conflicts_and_patch_flavours(fake_kube: Kube,
                                                      api: client.ApiClient) -> None:
    apps = loose(client.AppsV1Api(api))
    await apps.create_namespaced_deployment(NS, deployment())
    stale = await apps.read_namespaced_deployment("web", NS)
    await apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 2}})
    stale.spec.replicas = 5
    with pytest.raises(ApiException) as conflict:
        await apps.replace_namespaced_deployment("web", NS, stale)
    assert conflict.value.status == 409
    assert status_of(conflict.value)["reason"] == "Conflict"
    scale = await apps.read_namespaced_deployment_scale("web", NS)
    with pytest.raises(ApiException) as scale_conflict:
        await apps.replace_namespaced_deployment_scale("web", NS, {
            "metadata": {"name": "web", "resourceVersion": stale.metadata.resource_version},
            "spec": {"replicas": 4}})
    assert scale_conflict.value.status == 409
    scale.spec.replicas = 4
    assert (await apps.replace_namespaced_deployment_scale("web", NS, scale)).spec.replicas == 4

    key = "queue-autoscaler.io/redis-list".replace("/", "~1")
    patched = await apps.patch_namespaced_deployment("web", NS, [
        {"op": "add", "path": f"/metadata/annotations/{key}", "value": "jobs"},
        {"op": "add", "path": "/metadata/annotations/a~0b", "value": "tilde"},
        {"op": "test", "path": "/spec/replicas", "value": 4}])
    assert patched.metadata.annotations == {"queue-autoscaler.io/redis-list": "jobs",
                                            "a~b": "tilde",
                                            "deployment.kubernetes.io/revision": "1"}
    with pytest.raises(ApiException) as failed_test:
        await apps.patch_namespaced_deployment("web", NS, [
            {"op": "test", "path": "/spec/replicas", "value": 9}])
    assert failed_test.value.status == 422
    before = fake_kube.pod_names(NS)
    with pytest.raises(ApiException) as rollout:  # a template change would start a rollout
        await apps.patch_namespaced_deployment("web", NS, {"spec": {"template": {"spec": {
            "containers": [{"name": "sidecar", "image": "consumer"}]}}}})
    assert rollout.value.status == 422
    assert "rollouts are not modelled by the fake; use tests/cluster" in (
        status_of(rollout.value)["message"])
    assert fake_kube.pod_names(NS) == before  # nothing replaced
    containers = strategic_merge_patch(  # containers merge by name (a pod-spec merge key)
        {"containers": [{"name": "w", "image": "busybox"}]},
        {"containers": [{"name": "sidecar", "image": "consumer"}]})
    assert [c["name"] for c in containers["containers"]] == ["w", "sidecar"]
    with pytest.raises(ApiException) as missing:
        await apps.read_namespaced_deployment("nope", NS)
    assert missing.value.status == 404
    assert status_of(missing.value)["kind"] == "Status"


async def test_leases_and_generate_name(fake_kube: Kube, api: client.ApiClient) -> None:
    leases = loose(client.CoordinationV1Api(api))
    lease = await leases.create_namespaced_lease(NS, {
        "metadata": {"generateName": "autoscaler-"}, "spec": {"leaseDurationSeconds": 15}})
    name = lease.metadata.name
    assert name.startswith("autoscaler-") and len(name) == len("autoscaler-") + 5
    with pytest.raises(ApiException) as exists:
        await leases.create_namespaced_lease(NS, {"metadata": {"name": name}})
    assert (exists.value.status, status_of(exists.value)["reason"]) == (409,
                                                                             "AlreadyExists")

    def claim(holder: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "resourceVersion": lease.metadata.resource_version},
                "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}}

    results = await asyncio.gather(leases.replace_namespaced_lease(name, NS, claim("a")),
                                   leases.replace_namespaced_lease(name, NS, claim("b")),
                                   return_exceptions=True)
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, ApiException)]
    assert len(winners) == 1 and [e.status for e in losers] == [409]
    holder = fake_kube.get("lease", NS, name)
    assert holder is not None
    assert holder["spec"]["holderIdentity"] == winners[0].spec.holder_identity


async def test_events_both_apis_and_hpas(fake_kube: Kube, api: client.ApiClient) -> None:
    core, events = loose(client.CoreV1Api(api)), loose(client.EventsV1Api(api))
    ref = {"kind": "Deployment", "apiVersion": "apps/v1", "name": "web", "namespace": NS}
    await core.create_namespaced_event(NS, {
        "metadata": {"name": "web.a"}, "involvedObject": ref, "reason": "InvalidSpec",
        "message": "bad messages-per-replica", "type": "Warning"})
    await events.create_namespaced_event(NS, {
        "metadata": {"name": "web.b"}, "regarding": ref, "reason": "Scaled", "note": "3 -> 1",
        "type": "Normal", "eventTime": "2025-01-01T00:00:00.000000Z", "action": "Scale",
        "reportingController": "queue-autoscaler.io/controller", "reportingInstance": "x"})
    listed = await core.list_namespaced_event(NS, field_selector="involvedObject.name=web")
    assert [(e.reason, e.message) for e in listed.items] == [
        ("InvalidSpec", "bad messages-per-replica"), ("Scaled", "3 -> 1")]
    assert [e.note for e in (await events.list_namespaced_event(NS)).items] == [
        "bad messages-per-replica", "3 -> 1"]
    assert [e["reason"] for e in fake_kube.events(NS)] == ["InvalidSpec", "Scaled"]

    hpa = {"metadata": {"name": "web"}, "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "minReplicas": 1, "maxReplicas": 5}}
    await loose(client.AutoscalingV2Api(api)).create_namespaced_horizontal_pod_autoscaler(NS, hpa)
    autoscaling_v1 = loose(client.AutoscalingV1Api(api))
    v1 = await autoscaling_v1.list_horizontal_pod_autoscaler_for_all_namespaces()
    assert [h.spec.scale_target_ref.name for h in v1.items] == ["web"]


# ---- faults, kubectl, RBAC --------------------------------------------------------------


async def test_fault_injection(fake_kube: Kube, api: client.ApiClient) -> None:
    apps = loose(client.AppsV1Api(api))
    fake_kube.create(deployment())
    fake_kube.inject_faults(429, count=1, retry_after_s=2)
    with pytest.raises(ApiException) as throttled:
        await apps.read_namespaced_deployment_scale("web", NS)
    assert throttled.value.status == 429 and throttled.value.headers is not None
    assert throttled.value.headers["Retry-After"] == "2"
    assert status_of(throttled.value)["details"]["retryAfterSeconds"] == 2
    assert (await apps.read_namespaced_deployment_scale("web", NS)).spec.replicas == 3

    fake_kube.inject_faults(500, count=2, methods={"PATCH"}, path_contains="/scale")
    await apps.read_namespaced_deployment("web", NS)  # not matched: served
    for _ in range(2):
        with pytest.raises(ApiException) as broken:
            await apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 1}})
        assert broken.value.status == 500
    await apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 1}})
    assert [r.status for r in fake_kube.requests if r.verb == "patch"] == [500, 500, 200]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
async def test_kubectl_get_and_scale(fake_kube: Kube, tmp_path: Path) -> None:
    fake_kube.create(deployment())

    async def kubectl(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            "kubectl", "--kubeconfig", str(fake_kube.kubeconfig), "--cache-dir",
            str(tmp_path / "cache"), *args, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
        out, err = await proc.communicate()
        assert proc.returncode == 0, err.decode()
        return out.decode()

    table = await kubectl("get", "deployments", "-n", NS)
    assert table.split("\n")[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert table.split("\n")[1].split()[:2] == ["web", "3/3"]
    assert "deployment.apps/web scaled" in await kubectl(
        "scale", "deployment/web", "--replicas=2", "-n", NS)
    assert len(fake_kube.list_pods(NS, "app=web")) == 2
    as_json = json.loads(await kubectl("get", "pods", "-n", NS, "-o", "json"))
    assert len(as_json["items"]) == 2


def test_request_info_and_rbac() -> None:
    watch_pods = request_info("GET", "/api/v1/namespaces/a/pods", {"watch": "True"})
    assert (watch_pods.verb, watch_pods.resource, watch_pods.namespace) == ("watch", "pods", "a")
    one = request_info("GET", "/apis/apps/v1/deployments",
                       {"watch": "1", "fieldSelector": "metadata.name=web"})
    assert (one.verb, one.name, one.api_group) == ("watch", "web", "apps")
    scale = request_info("PATCH", "/apis/apps/v1/namespaces/a/deployments/web/scale", {})
    assert scale.rbac == ("apps", "deployments", "scale", "patch")
    sweep = request_info("DELETE", "/api/v1/namespaces/a/pods", {})
    assert sweep.verb == "deletecollection"
    ns = request_info("GET", "/api/v1/namespaces/a", {})
    assert (ns.resource, ns.name, ns.verb) == ("namespaces", "a", "get")

    role = {"rules": [
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch"]},
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "resourceNames": ["queue-autoscaler"], "verbs": ["get", "update"]},
        {"nonResourceURLs": ["/version"], "verbs": ["get"]},
    ]}
    lease = "/apis/coordination.k8s.io/v1/namespaces/a/leases/"
    assert rbac_allows(role, scale) and rbac_allows(role, one)
    assert not rbac_allows(role, watch_pods) and not rbac_allows(role, sweep)
    assert rbac_allows(role, request_info("PUT", lease + "queue-autoscaler", {}))
    assert not rbac_allows(role, request_info("PUT", lease + "someone-else", {}))
    assert not rbac_allows(role, request_info("POST", lease[:-1], {}))
    assert rbac_allows(role, request_info("GET", "/version", {}))
    assert not rbac_allows(role, request_info("GET", "/apis", {}))
    wildcard = {"rules": [{"apiGroups": ["*"], "resources": ["*/scale"], "verbs": ["*"]}]}
    assert rbac_allows(wildcard, scale) and not rbac_allows(wildcard, watch_pods)


async def test_recorded_requests_checked_against_a_role(fake_kube: Kube,
                                                        api: client.ApiClient) -> None:
    apps, core = loose(client.AppsV1Api(api)), loose(client.CoreV1Api(api))
    fake_kube.create(deployment())
    await apps.list_deployment_for_all_namespaces(label_selector="queue-autoscaler.io/enabled")
    await apps.patch_namespaced_deployment_scale("web", NS, {"spec": {"replicas": 1}})
    await core.delete_namespaced_pod(fake_kube.pod_names(NS)[0], NS)
    role = {"rules": [
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list", "watch"]},
        {"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["patch"]}]}
    assert [(r.verb, r.resource, r.status) for r in fake_kube.rbac_denied(role)] == [
        ("delete", "pods", 200)]
