"""``KubeTarget``: one Deployment or StatefulSet as a ``Target``, through ``autoscaler.kube``.

- ``scale`` patches ``spec.replicas`` through the ``/scale`` subresource only (KEDA's
  executor does the same), never the workload's spec.
- ``replicas`` lists the pods matching the Scale's ``status.selector`` (read once, then
  cached): terminating and finished pods are already leaving and are left out.
- ``record_event`` creates a core/v1 Event on the workload; a repeat of the same type,
  reason and message bumps ``count`` and ``lastTimestamp`` of the Event already written
  (as client-go's recorder does), so a repeating warning costs one small PATCH, not one
  more object.
- ``write_status`` merge-patches the ``queue-autoscaler.io/status`` annotation with compact
  JSON only when it differs from what was last written, ignoring ``time``: a steady state
  writes nothing. Seed ``last_status`` from the watch (``WorkloadWatcher.last_status``) so
  a restarted or newly elected controller does not rewrite every workload's status.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from autoscaler.config import STATUS_ANNOTATION
from autoscaler.errors import KubeConflictError, KubeError, KubeNotFoundError
from autoscaler.kube import KubeClient, operations
from autoscaler.logs import log_event
from autoscaler.targets import ReplicaInfo, WorkloadRef

logger = logging.getLogger(__name__)

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
COMPONENT = "queue-autoscaler"
MAX_EVENT_MESSAGE = 1024  # the events.k8s.io limit; core/v1 has none, kubectl wraps anyway
Obj = dict[str, Any]


@dataclass(frozen=True)
class ScaleState:
    """The Scale as read back: desired (spec) and current (status) replicas, pod selector."""

    desired: int
    current: int
    selector: str


def _timestamp(text: str | None) -> float:
    if not text:
        return 0.0
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError:
        return 0.0


def _cost(text: str | None) -> int:
    try:
        return int(text) if text is not None else 0
    except ValueError:
        return 0  # Kubernetes ignores an unparsable cost too


def replica_of(pod: Obj) -> ReplicaInfo:
    """A pod as the drain protocol ranks it. Scheduled: bound to a node, or Running (the
    fake API server runs pods without binding them)."""
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    return ReplicaInfo(
        name=meta.get("name", ""),
        ready=conditions.get("Ready") == "True",
        created_at=_timestamp(meta.get("creationTimestamp")),
        deletion_cost=_cost((meta.get("annotations") or {}).get(DELETION_COST)),
        scheduled=bool(spec.get("nodeName")) or status.get("phase") == "Running",
    )


def _active(pod: Obj) -> bool:
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    return not meta.get("deletionTimestamp") and status.get("phase") not in ("Succeeded", "Failed")


def _comparable(status: Mapping[str, Any]) -> Any:
    """The status as JSON would give it back, without ``time`` (which always changes)."""
    normal = json.loads(json.dumps(status, default=str))
    normal.pop("time", None)
    return normal


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeTarget:
    """The ``Target`` for one workload; build one per workload with a shared ``KubeClient``."""

    def __init__(
        self,
        kube: KubeClient,
        ref: WorkloadRef,
        *,
        last_status: str | None = None,
        max_remembered_events: int = 32,
    ) -> None:
        self.kube = kube
        self._ref = ref
        self._selector: str | None = None
        self._uid: str | None = None
        self._last_status: Any = None
        if last_status is not None:
            try:
                self._last_status = _comparable(json.loads(last_status))
            except (ValueError, TypeError, AttributeError):
                self._last_status = None  # unreadable: the next write replaces it
        # (type, reason, message) → the Event written for it, newest last.
        self._events: OrderedDict[tuple[str, str, str], Obj] = OrderedDict()
        self._max_events = max_remembered_events

    @property
    def ref(self) -> WorkloadRef:
        return self._ref

    def _fields(self) -> dict[str, Any]:
        return {"namespace": self._ref.namespace, "workload": self._ref.name}

    def _remember(self, scale: Obj) -> ScaleState:
        self._uid = (scale.get("metadata") or {}).get("uid") or self._uid
        spec, status = scale.get("spec") or {}, scale.get("status") or {}
        self._selector = status.get("selector") or self._selector
        return ScaleState(
            int(spec.get("replicas") or 0),
            int(status.get("replicas") or 0),
            status.get("selector") or "",
        )

    # ---- scale and replicas -----------------------------------------------------------

    async def read_scale(self) -> ScaleState:
        return self._remember(await operations.read_scale(self.kube, self._ref))

    async def scale(self, replicas: int) -> None:
        state = self._remember(await operations.patch_scale(self.kube, self._ref, replicas))
        log_event(logger, "scaled", **self._fields(), replicas=replicas, current=state.current)

    async def replicas(self) -> list[ReplicaInfo]:
        selector = self._selector or (await self.read_scale()).selector
        if not selector:
            raise KubeError(f"{self._ref}: the Scale has no status.selector to find its pods")
        pods = await operations.list_pods(self.kube, self._ref.namespace, selector)
        return [replica_of(pod) for pod in pods if _active(pod)]

    async def set_deletion_cost(self, name: str, cost: int | None) -> None:
        value = None if cost is None else str(cost)
        await operations.patch_pod_annotations(
            self.kube, self._ref.namespace, name, {DELETION_COST: value}
        )
        log_event(logger, "deletion cost", logging.DEBUG, **self._fields(), pod=name, cost=cost)

    # ---- status -----------------------------------------------------------------------

    async def write_status(self, status: Mapping[str, object]) -> None:
        comparable = _comparable(status)
        if comparable == self._last_status:
            return
        text = json.dumps(status, separators=(",", ":"), sort_keys=True, default=str)
        await operations.patch_workload_annotations(self.kube, self._ref, {STATUS_ANNOTATION: text})
        self._last_status = comparable

    # ---- events -----------------------------------------------------------------------

    async def record_event(self, reason: str, message: str, *, warning: bool = False) -> None:
        kind = "Warning" if warning else "Normal"
        message = message[:MAX_EVENT_MESSAGE]
        key = (kind, reason, message)
        known = self._events.get(key)
        event: Obj | None = None
        if known is not None:
            try:
                event = await self._bump(known)
            except KubeNotFoundError:
                event = None  # expired (Events live about an hour): write a new one
        if event is None:
            event = await self._create_event(kind, reason, message)
        self._events[key] = event
        self._events.move_to_end(key)
        while len(self._events) > self._max_events:
            self._events.popitem(last=False)
        log_event(
            logger,
            "event",
            **self._fields(),
            type=kind,
            reason=reason,
            count=event.get("count"),
            message=message,
        )

    async def _involved_object(self) -> Obj:
        if self._uid is None:
            # Without the uid the Event still shows by name: never lose it for that.
            with contextlib.suppress(KubeError):
                await self.read_scale()
        ref = self._ref
        involved: Obj = {
            "apiVersion": operations.API_VERSIONS.get(ref.kind, "apps/v1"),
            "kind": ref.kind,
            "namespace": ref.namespace,
            "name": ref.name,
        }
        if self._uid:
            involved["uid"] = self._uid
        return involved

    async def _create_event(self, kind: str, reason: str, message: str) -> Obj:
        now = _now()
        ref = self._ref
        body = {
            "metadata": {"name": f"{ref.name}.{time.time_ns():x}", "namespace": ref.namespace},
            "involvedObject": await self._involved_object(),
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        return await operations.create_event(self.kube, ref.namespace, body)

    async def _bump(self, known: Obj) -> Obj:
        """count + 1 on the Event, conditional on its resourceVersion; on 409 re-read."""
        namespace, name = self._ref.namespace, known["metadata"]["name"]

        async def write(current: Obj) -> Obj:
            patch = {
                "count": int(current.get("count") or 1) + 1,
                "lastTimestamp": _now(),
                "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
            }
            return await operations.patch_event(self.kube, namespace, name, patch)

        async def read() -> Obj:
            return await operations.read_event(self.kube, namespace, name)

        try:
            return await write(known)  # from what we wrote last: usually no read needed
        except KubeConflictError:
            return await self.kube.read_modify_write(read, write)
