"""WorkloadWatcher over real HTTP against the fake API server: list + watch, 410, HPAs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest_asyncio

from autoscaler.annotations import STATUS_ANNOTATION
from autoscaler.kube import KubeClient, WatchSettings, WorkloadWatcher
from autoscaler.workload import WorkloadEvent, WorkloadRef
from tests.fakekube import FakeKubeServer
from tests.fakekube.fixtures import fake_kube as fake_kube
from tests.kubeutil import hpa, requests_of, stop, wait_for, workload
from tests.kubeutil import kube as kube
from tests.kubeutil import metrics as metrics

FAST_WATCH = WatchSettings(backoff_initial_s=0.01, backoff_max_s=0.05)
WEB = WorkloadRef("default", "web", "Deployment")
DB = WorkloadRef("default", "db", "StatefulSet")


class Recorder:
    """The sink: every event, and the latest per workload."""

    def __init__(self) -> None:
        self.events: list[WorkloadEvent] = []

    def __call__(self, event: WorkloadEvent) -> None:
        self.events.append(event)

    def last(self, ref: WorkloadRef) -> WorkloadEvent | None:
        return next((e for e in reversed(self.events) if e.ref == ref), None)

    def of(self, ref: WorkloadRef) -> list[WorkloadEvent]:
        return [e for e in self.events if e.ref == ref]


@pytest_asyncio.fixture
async def watching(
    fake_kube: FakeKubeServer, kube: KubeClient
) -> AsyncIterator[tuple[WorkloadWatcher, Recorder]]:
    recorder = Recorder()
    watcher = WorkloadWatcher(kube, recorder, settings=FAST_WATCH)
    task = asyncio.create_task(watcher.run())
    await fake_kube.wait_for_watches(3)  # Deployments, StatefulSets, HPAs
    yield watcher, recorder
    await stop(task)


async def test_sees_create_annotate_scale_delete_of_labelled_workloads(
    fake_kube: FakeKubeServer, watching: tuple[WorkloadWatcher, Recorder]
) -> None:
    watcher, seen = watching
    fake_kube.create(workload("Deployment", "web", replicas=2))
    fake_kube.create(workload("StatefulSet", "db", replicas=1))
    fake_kube.create(workload("Deployment", "plain", enabled=False))
    await wait_for(lambda: seen.last(WEB) and seen.last(DB), what="both workloads")
    assert seen.last(WEB) == WorkloadEvent(WEB, {}, 2)
    assert seen.last(DB) == WorkloadEvent(DB, {}, 1)

    key = "queue-autoscaler.io/redis-list"
    fake_kube.patch("deployments", "default", "web", {"metadata": {"annotations": {key: "jobs"}}})
    await wait_for(lambda: seen.last(WEB).annotations == {key: "jobs"}, what="annotation")  # type: ignore[union-attr]

    # Annotations that are not ours, and our own status, are no news to the controller.
    before = len(seen.of(WEB))
    other = {"metadata": {"annotations": {"team": "x", STATUS_ANNOTATION: '{"desired":2}'}}}
    fake_kube.patch("deployments", "default", "web", other)
    fake_kube.scale("deployments", "default", "web", 4)
    await wait_for(lambda: seen.last(WEB).replicas == 4, what="replicas")  # type: ignore[union-attr]
    assert len(seen.of(WEB)) == before + 1
    # the status seeds a target built at the first sighting only: not kept afterwards
    assert watcher.last_status(WEB) is None

    fake_kube.delete("statefulsets", "default", "db")
    await wait_for(lambda: seen.last(DB).deleted, what="StatefulSet deleted")  # type: ignore[union-attr]
    # Removing the label takes the workload out of the selection: deleted, too.
    fake_kube.patch(
        "deployments",
        "default",
        "web",
        {"metadata": {"labels": {"queue-autoscaler.io/enabled": None}}},
    )
    await wait_for(lambda: seen.last(WEB).deleted, what="unlabelled")  # type: ignore[union-attr]
    assert all(e.ref.name != "plain" for e in seen.events)
    # Selection happens on the server.
    assert all(
        r.query.get("labelSelector") == "queue-autoscaler.io/enabled=true"
        for r in requests_of(fake_kube, "watch", "/apps/")
    )


async def test_410_relists_and_keeps_going(
    fake_kube: FakeKubeServer, watching: tuple[WorkloadWatcher, Recorder]
) -> None:
    _, seen = watching
    fake_kube.create(workload("Deployment", "web"))
    await wait_for(lambda: seen.last(WEB), what="web")
    lists_before = len(requests_of(fake_kube, "list", "/deployments"))
    # While no watch is open, web goes away and a new one comes; then history is compacted,
    # so the resumed watch gets 410 Expired and must relist.
    fake_kube.store.close_watchers()
    fake_kube.delete("deployments", "default", "web")
    fake_kube.create(workload("Deployment", "api"))
    fake_kube.compact()
    api = WorkloadRef("default", "api", "Deployment")
    await wait_for(lambda: seen.last(api) and seen.last(WEB).deleted, what="relist")  # type: ignore[union-attr]
    assert len(requests_of(fake_kube, "list", "/deployments")) > lists_before
    # ... and the new watch delivers what happens next.
    await fake_kube.wait_for_watches(3)
    fake_kube.scale("deployments", "default", "api", 3)
    await wait_for(lambda: seen.last(api).replicas == 3, what="scale after relist")  # type: ignore[union-attr]


async def test_watch_errors_back_off_and_recover(
    fake_kube: FakeKubeServer, watching: tuple[WorkloadWatcher, Recorder]
) -> None:
    _, seen = watching
    fake_kube.inject_faults(500, 3, methods={"watch", "list"}, path_contains="/deployments")
    fake_kube.store.close_watchers()  # every loop reconnects; the Deployment ones fail 3 times
    fake_kube.create(workload("Deployment", "web"))
    await wait_for(lambda: seen.last(WEB), what="web after errors")
    failed = [r for r in fake_kube.requests if r.status == 500]
    assert len(failed) == 3


async def test_namespace_restriction(fake_kube: FakeKubeServer, kube: KubeClient) -> None:
    seen = Recorder()
    fake_kube.create(workload("Deployment", "early", namespace="team-a"))
    watcher = WorkloadWatcher(kube, seen, namespaces=["team-a", "team-c"], settings=FAST_WATCH)
    task = asyncio.create_task(watcher.run())
    try:
        await fake_kube.wait_for_watches(6)  # 3 resources × 2 namespaces
        fake_kube.create(workload("Deployment", "web", namespace="team-a"))
        fake_kube.create(workload("StatefulSet", "db", namespace="team-c"))
        fake_kube.create(workload("Deployment", "web", namespace="team-b"))
        names = {("team-a", "early"), ("team-a", "web"), ("team-c", "db")}
        await wait_for(lambda: {(e.ref.namespace, e.ref.name) for e in seen.events} >= names)
        await fake_kube.settled()
    finally:
        await stop(task)
    assert {e.ref.namespace for e in seen.events} == {"team-a", "team-c"}
    paths = {r.path for r in requests_of(fake_kube, "watch") + requests_of(fake_kube, "list")}
    assert paths and all("/namespaces/team-a/" in p or "/namespaces/team-c/" in p for p in paths)


async def test_hpa_target_is_managed_elsewhere(fake_kube: FakeKubeServer, kube: KubeClient) -> None:
    fake_kube.create(workload("Deployment", "web"))
    fake_kube.create(hpa("web-hpa", "Deployment", "web"))
    fake_kube.create(workload("StatefulSet", "db"))
    fake_kube.create(hpa("other", "Deployment", "db"))  # a Deployment named db: not ours
    seen = Recorder()
    watcher = WorkloadWatcher(kube, seen, settings=FAST_WATCH)
    task = asyncio.create_task(watcher.run())
    try:
        await wait_for(lambda: seen.last(WEB) and seen.last(DB), what="inventory")
        # HPAs are listed first: web is never announced as free.
        assert [e.managed_elsewhere for e in seen.of(WEB)] == ["HorizontalPodAutoscaler/web-hpa"]
        assert seen.last(DB).managed_elsewhere is None  # type: ignore[union-attr]
        await fake_kube.wait_for_watches(3)
        fake_kube.create(hpa("db-hpa", "StatefulSet", "db"))
        await wait_for(lambda: seen.last(DB).managed_elsewhere == "HorizontalPodAutoscaler/db-hpa")  # type: ignore[union-attr]
        fake_kube.delete("horizontalpodautoscalers", "default", "web-hpa")
        await wait_for(lambda: seen.last(WEB).managed_elsewhere is None, what="HPA deleted")  # type: ignore[union-attr]
    finally:
        await stop(task)


async def test_resumes_from_the_last_resource_version_bookmarks_included(
    fake_kube: FakeKubeServer, watching: tuple[WorkloadWatcher, Recorder]
) -> None:
    _, seen = watching
    fake_kube.create(workload("Deployment", "web"))
    await wait_for(lambda: seen.last(WEB), what="web")
    # Writes the watches do not select move the resourceVersion; a BOOKMARK reports it.
    fake_kube.create(workload("Deployment", "plain", enabled=False))
    bookmarked = fake_kube.resource_version
    fake_kube.bookmark()
    await fake_kube.settled()
    watches_before = len(requests_of(fake_kube, "watch", "/deployments"))
    lists_before = len(requests_of(fake_kube, "list", "/deployments"))
    fake_kube.store.close_watchers()  # as the server's timeoutSeconds does
    await wait_for(
        lambda: len(requests_of(fake_kube, "watch", "/deployments")) > watches_before,
        what="a new watch",
    )
    resumed = requests_of(fake_kube, "watch", "/deployments")[-1]
    assert resumed.query["resourceVersion"] == bookmarked
    assert resumed.query["allowWatchBookmarks"] == "true"
    assert len(requests_of(fake_kube, "list", "/deployments")) == lists_before  # no relist


async def test_http_410_on_a_watch_request_relists(
    fake_kube: FakeKubeServer, watching: tuple[WorkloadWatcher, Recorder]
) -> None:
    _, seen = watching
    lists_before = len(requests_of(fake_kube, "list", "/deployments"))
    fake_kube.inject_faults(410, 1, methods={"watch"}, path_contains="/deployments")
    fake_kube.store.close_watchers()
    await wait_for(
        lambda: len(requests_of(fake_kube, "list", "/deployments")) > lists_before,
        what="a relist",
    )
    await fake_kube.wait_for_watches(3)
    fake_kube.create(workload("Deployment", "web"))
    await wait_for(lambda: seen.last(WEB), what="web after the relist")


async def test_a_paged_listing_is_taken_page_by_page_and_synced_once_whole(
    fake_kube: FakeKubeServer, kube: KubeClient
) -> None:
    key = "queue-autoscaler.io/redis-list"
    for i in range(7):
        fake_kube.create(workload("Deployment", f"w{i}", annotations={key: f"q{i}", "team": "x"}))
    recorder = Recorder()
    synced_with: list[int] = []
    watcher = WorkloadWatcher(
        kube, recorder, settings=WatchSettings(page_size=3, backoff_initial_s=0.01)
    )

    async def note_synced() -> None:
        await watcher.synced.wait()
        synced_with.append(len(recorder.events))

    noting = asyncio.create_task(note_synced())
    task = asyncio.create_task(watcher.run())
    try:
        await wait_for(lambda: synced_with, what="synced")
    finally:
        await stop(task)
        await stop(noting)
    assert synced_with == [7]  # every workload of every page delivered before it is set
    assert len(requests_of(fake_kube, "list", "/deployments")) == 3  # 3 + 3 + 1
    refs = [e.ref for e in recorder.events]
    assert refs == [WorkloadRef("default", f"w{i}", "Deployment") for i in range(7)]
    assert recorder.events[0].annotations == {key: "q0"}  # ours only, as before


async def test_every_later_status_of_a_workload_is_told_to_on_status(
    fake_kube: FakeKubeServer, kube: KubeClient
) -> None:
    """The first sighting's status seeds the target (last_status); every later event's,
    or None once it is gone, goes to on_status (KubeTarget.observe_status)."""
    told: list[tuple[WorkloadRef, str | None]] = []
    status = {STATUS_ANNOTATION: '{"desired":3}'}
    fake_kube.create(workload("Deployment", "web", annotations=status))
    watcher = WorkloadWatcher(
        kube, Recorder(), settings=FAST_WATCH, on_status=lambda r, t: told.append((r, t))
    )
    task = asyncio.create_task(watcher.run())
    try:
        await wait_for(lambda: WEB in watcher.emitted, what="web listed")
        assert told == []  # the first sighting seeds; it is not told
        annotations = {"metadata": {"annotations": {STATUS_ANNOTATION: '{"desired":4}'}}}
        fake_kube.patch("deployments", "default", "web", annotations)
        await wait_for(lambda: bool(told), what="the new status told")
        assert told == [(WEB, '{"desired":4}')]
        fake_kube.patch("deployments", "default", "web", {"metadata": {"annotations": {
            STATUS_ANNOTATION: None}}})  # fmt: skip
        await wait_for(lambda: len(told) == 2, what="the removal told")
        assert told[1] == (WEB, None)
    finally:
        await stop(task)


async def test_the_status_of_a_first_sighting_is_given_once_to_seed_its_target(
    fake_kube: FakeKubeServer, kube: KubeClient
) -> None:
    """As the controller's target factory reads it: inside the sink, at the first event."""
    seeds: dict[WorkloadRef, str | None] = {}

    def sink(event: WorkloadEvent) -> None:
        if event.ref not in seeds:
            seeds[event.ref] = watcher.last_status(event.ref)

    status = {STATUS_ANNOTATION: '{"desired":3}'}
    fake_kube.create(workload("Deployment", "web", annotations=status))
    watcher = WorkloadWatcher(kube, sink, settings=FAST_WATCH)
    task = asyncio.create_task(watcher.run())
    try:
        await wait_for(lambda: WEB in seeds, what="web listed")
        fake_kube.create(workload("StatefulSet", "db", annotations=status))  # seen by watch
        await wait_for(lambda: DB in seeds, what="db watched")
        assert seeds == {WEB: '{"desired":3}', DB: '{"desired":3}'}
        assert watcher.last_status(WEB) is None  # given once
        # deleted and created again: a first sighting again
        fake_kube.delete("statefulsets", "default", "db")
        await wait_for(lambda: DB not in watcher.emitted, what="db deleted")
        del seeds[DB]
        fake_kube.create(workload("StatefulSet", "db", annotations={STATUS_ANNOTATION: "{}"}))
        await wait_for(lambda: DB in seeds, what="db again")
        assert seeds[DB] == "{}"
    finally:
        await stop(task)
