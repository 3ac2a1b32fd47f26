"""The inventory: list + watch annotated Deployments and StatefulSets, and the HPAs.

``WorkloadWatcher.run()`` keeps one list-then-watch loop per (resource, namespace) — one
per resource across all namespaces when no namespace is given. Each loop lists (paged),
then watches from the list's resourceVersion, resumes from the last one it saw when the
server ends a watch, relists on 410 Gone, and reconnects with backoff after any error: it
never dies, only cancellation stops it.

Workloads are selected server-side by the label ``queue-autoscaler.io/enabled=true``. Each
change is handed to ``sink`` as a ``WorkloadEvent`` — only when what the controller sees
changed: the ``queue-autoscaler.io/`` annotations (minus our own status annotation, whose
writes would otherwise echo back), ``spec.replicas``, or ``managed_elsewhere``, which names
the HorizontalPodAutoscaler (autoscaling/v2) whose ``scaleTargetRef`` is the workload.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import MappingProxyType

from autoscaler.aio import Pacer
from autoscaler.annotations import ANNOTATION_PREFIX, ENABLED_LABEL, STATUS_ANNOTATION
from autoscaler.errors import KubeError
from autoscaler.logs import log_event
from autoscaler.workload import WorkloadEvent, WorkloadRef

from .client import KubeClient, Obj
from .listwatch import ListWatch, Resource, WatchSettings, list_pages
from .operations import API_VERSIONS

MAX_HOLD_S = 0.01  # longest the taking-in of a listed page holds the event loop

logger = logging.getLogger(__name__)

Sink = Callable[[WorkloadEvent], Awaitable[None] | None]
HpaKey = tuple[str, str]  # (namespace, name)


def _ref(kind: str, obj: Obj) -> WorkloadRef:
    meta = obj.get("metadata") or {}
    return WorkloadRef(meta.get("namespace", ""), meta.get("name", ""), kind)


def _hpa_target(obj: Obj) -> WorkloadRef | None:
    target = (obj.get("spec") or {}).get("scaleTargetRef") or {}
    if not target.get("name") or not target.get("kind"):
        return None
    return WorkloadRef(
        (obj.get("metadata") or {}).get("namespace", ""), target["name"], target["kind"]
    )


ENABLED_SELECTOR = f"{ENABLED_LABEL}=true"  # selected server-side


def _seen(obj: Obj) -> Obj:
    """What ``_upsert`` reads of a listed workload: its name, namespace, our annotations
    and ``spec.replicas``, in the object's own shape (applied page by page while listing:
    ``list_pages``)."""
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return {
        "metadata": {
            "name": meta.get("name", ""),
            "namespace": meta.get("namespace", ""),
            "annotations": {
                k: v for k, v in annotations.items() if k.startswith(ANNOTATION_PREFIX)
            },
        },
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas")},
    }


def workload_resources(kube: KubeClient) -> tuple[Resource, ...]:
    """The kinds the controller scales, selected by the ``enabled`` label."""
    apps = kube.apps
    return (
        Resource(
            "Deployment",
            apps.list_deployment_for_all_namespaces,
            apps.list_namespaced_deployment,
            ENABLED_SELECTOR,
        ),
        Resource(
            "StatefulSet",
            apps.list_stateful_set_for_all_namespaces,
            apps.list_namespaced_stateful_set,
            ENABLED_SELECTOR,
        ),
    )


async def list_annotated_workloads(
    kube: KubeClient, namespaces: Sequence[str] = (), *, page_size: int = 500
) -> list[Obj]:
    """One listing of the labelled workloads (``autoscaler check --cluster``): the objects
    as the API sent them (camelCase, as in a manifest), with the ``apiVersion`` and ``kind``
    that list responses leave out of their items. ``namespaces`` empty: all of them."""
    workloads: list[Obj] = []
    for resource in workload_resources(kube):
        for namespace in tuple(dict.fromkeys(namespaces)) or (None,):
            items, _ = await list_pages(kube, resource, namespace, page_size)
            api_version = API_VERSIONS[resource.kind]
            workloads += [{"apiVersion": api_version, "kind": resource.kind, **o} for o in items]
    return workloads


class WorkloadWatcher:
    """Keeps the inventory of annotated workloads and tells ``sink`` about every change.

    ``sink`` may be sync (``Controller.apply``) or async (``queue.put``). ``namespaces``:
    watch only these (one watch per namespace and resource); empty means all namespaces.
    """

    def __init__(
        self,
        kube: KubeClient,
        sink: Sink,
        *,
        namespaces: Sequence[str] = (),
        settings: WatchSettings | None = None,
        on_status: Callable[[WorkloadRef, str | None], None] | None = None,
    ) -> None:
        self.kube = kube
        self.sink = sink
        # told our status annotation (None: none) as each later event of a workload
        # shows it: the first sighting's seeds the target (last_status), these keep it
        # current with other controllers' writes (KubeTarget.observe_status)
        self.on_status = on_status
        self.namespaces: tuple[str | None, ...] = tuple(dict.fromkeys(namespaces)) or (None,)
        self.settings = settings or WatchSettings()
        # What the controller sees of each workload, as last told: our annotations,
        # spec.replicas and managed_elsewhere (not the whole object: 10,000 Deployments
        # would cost ~100 MB). The one copy kept: a second map of (annotations, replicas)
        # and a WorkloadRef per event held ~2 MB at 10,000 (docs/performance.md, goal 5).
        self.emitted: dict[WorkloadRef, WorkloadEvent] = {}
        # Our status annotation as the first sighting of a workload showed it, until read
        # (last_status seeds the workload's target, built at that first event): kept for
        # every workload, as last seen, it held ~7 MB of text at 10,000 (goal 5).
        self.statuses: dict[WorkloadRef, str] = {}
        self.hpas: dict[HpaKey, WorkloadRef] = {}
        self._synced = asyncio.Event()
        self.resources = workload_resources(kube)
        autoscaling = kube.autoscaling
        self.hpa_resource = Resource(
            "HorizontalPodAutoscaler",
            autoscaling.list_horizontal_pod_autoscaler_for_all_namespaces,
            autoscaling.list_namespaced_horizontal_pod_autoscaler,
            None,
        )

    @property
    def synced(self) -> asyncio.Event:
        """Set once every workload listing has been taken in (or has failed, once): as
        client-go's WaitForCacheSync, the controller's first cycle waits for it — taken
        page by page, the inventory is otherwise cycled half-listed."""
        return self._synced

    def last_status(self, ref: WorkloadRef) -> str | None:
        """The ``queue-autoscaler.io/status`` annotation as the workload's first sighting
        showed it (seeds its ``KubeTarget``, built when the controller takes that first
        event); given once, then forgotten. None: it had none, or it was given already."""
        return self.statuses.pop(ref, None)

    async def run(self) -> None:
        """Run every loop until cancelled. HPAs are listed first, so no workload is ever
        announced as free and then as managed elsewhere."""
        hpa_loops = [self._hpa_loop(ns) for ns in self.namespaces]
        for loop in hpa_loops:
            try:
                await loop.relist()
            except KubeError as e:  # the loop retries with backoff
                log_event(logger, "hpa list failed", logging.WARNING, error=str(e))
        workload_loops = [
            self._workload_loop(resource, ns)
            for resource in self.resources
            for ns in self.namespaces
        ]
        async with asyncio.TaskGroup() as group:
            for loop in hpa_loops + workload_loops:
                group.create_task(loop.run(), name=f"watch {loop.scope}")
            await asyncio.gather(*(loop.tried.wait() for loop in workload_loops))
            self.synced.set()

    # ---- workloads ----------------------------------------------------------------------

    def _workload_loop(self, resource: Resource, namespace: str | None) -> ListWatch:
        def in_scope(ref: WorkloadRef) -> bool:
            return ref.kind == resource.kind and namespace in (None, ref.namespace)

        # Each page is taken as it arrives (on_page), while the server prepares the next:
        # at 10,000 workloads the listing (20 pages) and taking them in (parsing every
        # spec, ~2 s each on the bench) no longer add up (docs/performance.md, goal 6).
        # What the whole listing no longer holds is forgotten at its end (on_list).
        async def on_page(items: list[Obj]) -> None:
            # A page is 500 workloads, each parsed (~25 µs) and taken in: let the other
            # tasks in every ~MAX_HOLD_S (event-loop lag at a start, goal 4)
            pacer = Pacer(MAX_HOLD_S, 50)
            for i, obj in enumerate(items):
                await self._upsert(_ref(resource.kind, obj), obj)
                await pacer.after(i)

        async def on_list(items: list[Obj]) -> None:
            seen = {_ref(resource.kind, obj) for obj in items}  # in_scope by construction
            for ref in [r for r in self.emitted if in_scope(r) and r not in seen]:
                await self._forget(ref)

        async def on_event(kind: str, obj: Obj) -> None:
            ref = _ref(resource.kind, obj)
            if kind == "DELETED":
                await self._forget(ref)
            elif kind in ("ADDED", "MODIFIED"):
                await self._upsert(ref, obj)

        return ListWatch(
            self.kube,
            resource,
            namespace,
            self.settings,
            on_list,
            on_event,
            keep=_seen,
            on_page=on_page,
        )

    async def _upsert(self, ref: WorkloadRef, obj: Obj) -> None:
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        # interned: JSON gives each page and event its own key strings, ~3 MB of copies
        # of the same few keys at 10,000 workloads (docs/performance.md, goal 5); read-only,
        # so the controller keeps it without a copy (controller.workload)
        ours: Mapping[str, str] = MappingProxyType({
            sys.intern(k): v
            for k, v in annotations.items()
            if k.startswith(ANNOTATION_PREFIX) and k != STATUS_ANNOTATION
        })  # fmt: skip
        replicas = (obj.get("spec") or {}).get("replicas")
        known = self.emitted.get(ref)
        if known is None:
            status = annotations.get(STATUS_ANNOTATION)
            if status is not None:
                self.statuses[ref] = status
        else:
            ref = known.ref  # one WorkloadRef object per workload, not one per event
            if self.on_status is not None:
                self.on_status(ref, annotations.get(STATUS_ANNOTATION))
            if ours == known.annotations:
                # Our own status writes echo back as MODIFIED, each with fresh value
                # strings of the same annotations: keep the ones told (goal 5, __init__)
                ours = known.annotations
        await self._emit(ref, ours, 1 if replicas is None else int(replicas))

    async def _forget(self, ref: WorkloadRef) -> None:
        self.statuses.pop(ref, None)
        if self.emitted.pop(ref, None) is not None:
            await self._deliver(WorkloadEvent(ref, {}, 0, deleted=True))

    async def _emit(self, ref: WorkloadRef, annotations: Mapping[str, str], replicas: int) -> None:
        event = WorkloadEvent(
            ref, annotations, replicas, managed_elsewhere=self._managed_elsewhere(ref)
        )
        if self.emitted.get(ref) != event:
            self.emitted[ref] = event
            await self._deliver(event)

    async def _deliver(self, event: WorkloadEvent) -> None:
        log_event(
            logger,
            "workload deleted" if event.deleted else "workload seen",
            logging.DEBUG,
            namespace=event.ref.namespace,
            workload=event.ref.name,
            kind=event.ref.kind,
            replicas=event.replicas,
            managed_elsewhere=event.managed_elsewhere,
        )
        try:
            result = self.sink(event)
            if inspect.isawaitable(result):
                await result
        except Exception:  # the sink's bug must not stop the inventory
            logger.exception("workload sink failed workload=%s", event.ref)

    # ---- HPAs ---------------------------------------------------------------------------

    def _managed_elsewhere(self, ref: WorkloadRef) -> str | None:
        names = sorted(name for (ns, name), target in self.hpas.items() if target == ref)
        return f"HorizontalPodAutoscaler/{names[0]}" if names else None

    def _hpa_loop(self, namespace: str | None) -> ListWatch:
        async def on_list(items: list[Obj]) -> None:
            before = {k: v for k, v in self.hpas.items() if namespace in (None, k[0])}
            for key in before:
                del self.hpas[key]
            for obj in items:
                self._set_hpa(obj, deleted=False)
            await self._reemit(set(before.values()) | set(self.hpas.values()))

        async def on_event(kind: str, obj: Obj) -> None:
            old = self._set_hpa(obj, deleted=kind == "DELETED")
            await self._reemit({old, _hpa_target(obj)})

        return ListWatch(self.kube, self.hpa_resource, namespace, self.settings, on_list, on_event)

    def _set_hpa(self, obj: Obj, *, deleted: bool) -> WorkloadRef | None:
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        old = self.hpas.pop(key, None)
        target = None if deleted else _hpa_target(obj)
        if target is not None:
            self.hpas[key] = target
        return old

    async def _reemit(self, refs: Iterable[WorkloadRef | None]) -> None:
        for ref in refs:
            known = self.emitted.get(ref) if ref is not None else None
            if known is not None:
                await self._emit(known.ref, known.annotations, known.replicas)
