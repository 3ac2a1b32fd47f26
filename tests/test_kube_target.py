"""KubeTarget over real HTTP against the fake API server (and its ReplicaSet reactor)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest

from autoscaler.annotations import STATUS_ANNOTATION
from autoscaler.errors import KubeNotFoundError, ReplicasChangedError
from autoscaler.kube import KubeClient
from autoscaler.kube.events import EventQueue
from autoscaler.logs import FIELDS
from autoscaler.targets import Target
from autoscaler.targets.kubernetes import DELETION_COST, KubeTarget
from autoscaler.workload import WorkloadRef
from tests.fakekube import FakeKubeServer
from tests.fakekube.fixtures import fake_kube as fake_kube
from tests.kubeutil import kube as kube
from tests.kubeutil import metrics as metrics
from tests.kubeutil import requests_of, stop, wait_for, workload

WEB = WorkloadRef("default", "web", "Deployment")


def _target(kube: KubeClient, ref: WorkloadRef = WEB, **kwargs: object) -> KubeTarget:
    target = KubeTarget(kube, ref, **kwargs)  # type: ignore[arg-type]
    _protocol: Target = target  # KubeTarget satisfies the Target protocol (mypy checks)
    return target


async def test_scale_through_the_scale_subresource(
    fake_kube: FakeKubeServer, kube: KubeClient
) -> None:
    fake_kube.create(workload("Deployment", "web", replicas=1))
    target = _target(kube)
    await target.scale(4)
    assert len(fake_kube.pod_names("default", "app=web")) == 4
    state = await target.read_scale()
    assert (state.desired, state.current) == (4, 4)
    assert state.selector == "app=web"
    patches = requests_of(fake_kube, "patch")
    assert [(r.resource, r.subresource) for r in patches] == [("deployments", "scale")]
    assert patches[0].body == {"spec": {"replicas": 4}}


async def test_statefulset_scale_and_replicas(fake_kube: FakeKubeServer, kube: KubeClient) -> None:
    fake_kube.create(workload("StatefulSet", "db", replicas=1))
    target = _target(kube, WorkloadRef("default", "db", "StatefulSet"))
    await target.scale(3)
    names = sorted(r.name for r in await target.replicas())
    assert names == ["db-0", "db-1", "db-2"]


async def test_scaling_a_missing_workload_is_not_found(kube: KubeClient) -> None:
    with pytest.raises(KubeNotFoundError):
        await _target(kube, WorkloadRef("default", "ghost", "Deployment")).scale(2)


async def test_replicas_map_pods_and_cache_the_selector(
    fake_kube: FakeKubeServer, kube: KubeClient
) -> None:
    fake_kube.create(workload("Deployment", "web", replicas=3))
    fake_kube.create(workload("Deployment", "other", replicas=2))
    first, second, third = fake_kube.pod_names("default", "app=web")
    fake_kube.set_pod_ready("default", second, False)
    fake_kube.set_pod_phase("default", third, "Pending", scheduled=False)
    target = _target(kube)
    replicas = {r.name: r for r in await target.replicas()}
    assert set(replicas) == {first, second, third}
    assert replicas[first].ready and replicas[first].scheduled
    assert not replicas[second].ready and replicas[second].scheduled
    assert not replicas[third].ready and not replicas[third].scheduled
    assert replicas[first].created_at < replicas[third].created_at
    await target.replicas()
    assert len(requests_of(fake_kube, "get", "/scale")) == 1  # the selector is cached
    lists = requests_of(fake_kube, "list", "/pods")
    assert [r.query["labelSelector"] for r in lists] == ["app=web", "app=web"]


async def test_deletion_cost_set_removed_and_honoured(
    fake_kube: FakeKubeServer, kube: KubeClient
) -> None:
    fake_kube.create(workload("Deployment", "web", replicas=3))
    oldest = fake_kube.pod_names("default", "app=web")[0]
    target = _target(kube)
    await target.set_deletion_cost(oldest, -100)
    pod = fake_kube.get("pods", "default", oldest)
    assert pod is not None and pod["metadata"]["annotations"][DELETION_COST] == "-100"
    assert {r.name: r.deletion_cost for r in await target.replicas()}[oldest] == -100
    await target.scale(2)  # the ReplicaSet removes the cheapest pod, not the newest
    assert oldest not in fake_kube.pod_names("default", "app=web")

    survivor = fake_kube.pod_names("default", "app=web")[0]
    await target.set_deletion_cost(survivor, 5)
    await target.set_deletion_cost(survivor, None)
    pod = fake_kube.get("pods", "default", survivor)
    assert pod is not None and DELETION_COST not in (pod["metadata"].get("annotations") or {})


async def test_conditional_scale_refused_when_someone_else_scaled(
    fake_kube: FakeKubeServer, kube: KubeClient
) -> None:
    fake_kube.create(workload("Deployment", "web", replicas=3))
    target = _target(kube)
    await target.scale(2, expected=3)  # a JSON patch: test /spec/replicas, then replace
    [patch] = requests_of(fake_kube, "patch")
    assert patch.body == [
        {"op": "test", "path": "/spec/replicas", "value": 3},
        {"op": "replace", "path": "/spec/replicas", "value": 2},
    ]
    with pytest.raises(ReplicasChangedError) as refused:
        await target.scale(1, expected=3)
    assert refused.value.found == 2
    assert (await target.read_scale()).desired == 2


async def test_replicas_carry_owner_ordinal_and_the_users_cost_and_a_gone_pod_is_skipped(
    fake_kube: FakeKubeServer, kube: KubeClient
) -> None:
    fake_kube.create(workload("StatefulSet", "db", replicas=2))
    sts = {
        r.name: r
        for r in await _target(kube, WorkloadRef("default", "db", "StatefulSet")).replicas()
    }
    assert {n: (r.owner, r.ordinal) for n, r in sts.items()} == {
        "db-0": ("db", 0),
        "db-1": ("db", 1),
    }
    fake_kube.create(workload("Deployment", "web", replicas=2))
    target = _target(kube)
    first, second = fake_kube.pod_names("default", "app=web")
    await target.set_deletion_cost(first, 0)
    web = {r.name: r for r in await target.replicas()}
    assert (web[first].deletion_cost, web[second].deletion_cost) == (0, None)  # set vs none
    assert len({r.owner for r in web.values()}) == 1 and web[first].ordinal is None
    await target.set_deletion_cost("gone", -(2**31))  # 404: nothing to rank, no error


async def test_events_are_created_and_aggregated(
    fake_kube: FakeKubeServer, kube: KubeClient
) -> None:
    deployment = fake_kube.create(workload("Deployment", "web"))
    target = _target(kube)
    await target.record_event("ScaleUp", "1 -> 3: backlog 150")
    await target.record_event("ScaleUp", "1 -> 3: backlog 150")
    await target.record_event("InvalidSpec", "annotation x: bad", warning=True)
    await target.record_event("ScaleUp", "1 -> 3: backlog 150")
    events = fake_kube.events("default")
    assert len(events) == 2
    by_reason = {e["reason"]: e for e in events}
    scale_up, invalid = by_reason["ScaleUp"], by_reason["InvalidSpec"]
    assert scale_up["count"] == 3 and scale_up["type"] == "Normal"
    assert invalid["count"] == 1 and invalid["type"] == "Warning"
    assert scale_up["source"] == {"component": "queue-autoscaler"}
    assert scale_up["involvedObject"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "namespace": "default",
        "name": "web",
        "uid": deployment["metadata"]["uid"],
    }
    assert scale_up["firstTimestamp"] <= scale_up["lastTimestamp"]
    assert len(requests_of(fake_kube, "create", "/events")) == 2
    assert len(requests_of(fake_kube, "patch", "/events/")) == 2


async def test_event_conflict_rereads_and_counts_right(
    fake_kube: FakeKubeServer, kube: KubeClient
) -> None:
    fake_kube.create(workload("Deployment", "web"))
    target = _target(kube)
    await target.record_event("Drain", "draining 2 pods")
    (event,) = fake_kube.events("default")
    # Someone else bumped it meanwhile: our cached resourceVersion is stale → 409 → re-read.
    fake_kube.patch("events", "default", event["metadata"]["name"], {"count": 5})
    await target.record_event("Drain", "draining 2 pods")
    (event,) = fake_kube.events("default")
    assert event["count"] == 6
    assert len(requests_of(fake_kube, "get", "/events/")) == 1
    # An expired Event (gone) is written anew.
    fake_kube.delete("events", "default", event["metadata"]["name"])
    await target.record_event("Drain", "draining 2 pods")
    (event,) = fake_kube.events("default")
    assert event["count"] == 1


async def test_status_written_only_when_it_changes(
    fake_kube: FakeKubeServer, kube: KubeClient
) -> None:
    fake_kube.create(workload("Deployment", "web"))
    target = _target(kube)
    status = {"desired": 3, "current": 1, "reason": "ScaleUp", "readings": {"jobs": 150.0}}
    await target.write_status({**status, "time": 1000.0})
    await target.write_status({**status, "time": 1005.0})  # only time differs: no write
    assert len(requests_of(fake_kube, "patch", "/deployments/web")) == 1
    deployment = fake_kube.get("deployments", "default", "web")
    assert deployment is not None
    text = deployment["metadata"]["annotations"][STATUS_ANNOTATION]
    assert json.loads(text) == {**status, "time": 1000.0}
    assert " " not in text  # compact
    await target.write_status({**status, "desired": 2, "time": 1010.0})
    assert len(requests_of(fake_kube, "patch", "/deployments/web")) == 2

    # A new target seeded with the annotation (as the watch saw it) writes nothing.
    written = fake_kube.get("deployments", "default", "web")
    assert written is not None
    seeded = _target(kube, last_status=written["metadata"]["annotations"][STATUS_ANNOTATION])
    await seeded.write_status({**status, "desired": 2, "time": 2000.0})
    assert len(requests_of(fake_kube, "patch", "/deployments/web")) == 2


async def test_a_status_another_controller_wrote_is_what_the_next_write_compares_with(
    fake_kube: FakeKubeServer, kube: KubeClient
) -> None:
    """A standby's target is told every status the watch shows (observe_status): when
    it leads, a status the old leader wrote and that is unchanged in substance is not
    written again; one that differs, or one removed, is."""
    fake_kube.create(workload("Deployment", "web"))
    leader, standby = _target(kube), _target(kube)

    def patches() -> int:
        return len(requests_of(fake_kube, "patch", "/deployments/web"))

    def on_object() -> str | None:
        deployment = fake_kube.get("deployments", "default", "web")
        assert deployment is not None
        return (deployment["metadata"].get("annotations") or {}).get(STATUS_ANNOTATION)

    status = {"desired": 3, "current": 1, "reason": "ScaleUp"}
    await leader.write_status({**status, "time": 1000.0})
    standby.observe_status(on_object())  # the watch's MODIFIED event
    leader.observe_status(on_object())  # its own write, echoed: nothing changes
    await leader.write_status({**status, "time": 1001.0})
    assert patches() == 1
    await standby.write_status({**status, "time": 2000.0})  # elected: the same in substance
    assert patches() == 1
    await leader.write_status({**status, "desired": 4, "time": 1002.0})  # the leader again
    standby.observe_status(on_object())
    await standby.write_status({**status, "time": 2001.0})  # differs from the object: written
    assert patches() == 3
    assert json.loads(on_object() or "{}") == {**status, "time": 2001.0}
    fake_kube.patch("deployments", "default", "web", {"metadata": {"annotations": {
        STATUS_ANNOTATION: None}}})  # fmt: skip
    standby.observe_status(on_object())  # removed by hand: written again
    await standby.write_status({**status, "time": 2002.0})
    assert patches() == 4 and on_object() is not None


async def test_queued_events_return_at_once_and_are_written_in_order(
    fake_kube: FakeKubeServer, kube: KubeClient
) -> None:
    fake_kube.create(workload("Deployment", "web"))
    queue = EventQueue()
    target = _target(kube, events=queue)
    await target.record_event("ScaleUp", "1 -> 3: backlog 150")
    await target.record_event("InvalidSpec", "annotation x: bad", warning=True)
    await target.record_event("ScaleUp", "1 -> 3: backlog 150")
    assert queue.queued == 3
    assert requests_of(fake_kube, "create", "/events") == []  # queued, not written
    writer = asyncio.create_task(queue.run())
    try:
        await wait_for(lambda: requests_of(fake_kube, "patch", "/events/"), 10, "the bump")
    finally:
        await stop(writer)
    by_reason = {e["reason"]: e for e in fake_kube.events("default")}
    assert by_reason["ScaleUp"]["count"] == 2
    assert by_reason["InvalidSpec"]["type"] == "Warning"
    creates = requests_of(fake_kube, "create", "/events")
    assert len(creates) == 2


async def test_a_full_event_queue_drops_the_oldest(
    fake_kube: FakeKubeServer, kube: KubeClient
) -> None:
    fake_kube.create(workload("Deployment", "web"))
    queue = EventQueue(max_queued=2)
    target = _target(kube, events=queue)
    for i in range(5):
        await target.record_event("Note", f"message {i}")
    assert (queue.queued, queue.dropped) == (2, 3)
    writer = asyncio.create_task(queue.run())
    try:
        await wait_for(lambda: len(fake_kube.events("default")) == 2, 10, "two Events")
    finally:
        await stop(writer)
    assert sorted(e["message"] for e in fake_kube.events("default")) == ["message 3", "message 4"]


async def test_events_queued_at_a_stop_are_flushed(
    fake_kube: FakeKubeServer, kube: KubeClient
) -> None:
    fake_kube.create(workload("Deployment", "web"))
    queue = EventQueue()
    target = _target(kube, events=queue)
    await target.record_event("ScaleDown", "3 -> 1: drained")
    await target.record_event("InvalidSpec", "annotation x: bad", warning=True)
    await queue.flush(10.0)  # no writer task ran: the stop writes them
    assert queue.queued == 0
    assert sorted(e["reason"] for e in fake_kube.events("default")) == ["InvalidSpec", "ScaleDown"]


@pytest.mark.looptime
async def test_a_flush_stops_at_its_timeout_and_says_what_it_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    queue = EventQueue()
    written: list[int] = []

    def event(i: int) -> Callable[[], Awaitable[None]]:
        async def write() -> None:
            await asyncio.sleep(2.0)  # a slow API server (fake time)
            written.append(i)

        return write

    for i in range(5):
        queue.put(event(i))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await queue.flush(5.0)
    assert round(loop.time() - started, 6) == 5.0
    assert (written, queue.queued) == ([0, 1], 3)  # the third, cut at the timeout, counts
    said = "events not written at stop"
    logged = [getattr(r, FIELDS) for r in caplog.records if r.getMessage() == said]
    assert logged == [{"left": 3, "timeout_s": 5.0}]
