"""``KubeTarget``: one Deployment or StatefulSet as a ``Target``, through ``autoscaler.kube``.

- ``scale`` patches ``spec.replicas`` through the ``/scale`` subresource only (KEDA's
  executor does the same), never the workload's spec; with ``expected`` the patch is a
  JSON patch whose ``test`` of ``/spec/replicas`` makes it conditional (a drain's write).
- ``replicas`` lists the pods matching the Scale's ``status.selector`` (read once, then
  cached): terminating pods (``deletionTimestamp`` set: they stay listed until their
  containers exit) and finished pods are already leaving and are left out, as the
  ReplicaSet and StatefulSet controllers leave them out of their counts. Each replica
  carries its owner (which ReplicaSet: a rollout shows two) and, for a StatefulSet, its
  ordinal.
- ``set_deletion_cost`` on a pod already gone (404) does nothing.
- ``record_event`` creates a core/v1 Event on the workload, or bumps the count of the same
  one already written (``autoscaler.kube.events``). With ``events`` (the controller's
  shared ``EventQueue``) it only queues the Event and returns: the queue writes it, behind
  every scale and drain write.
- ``write_status`` merge-patches the ``queue-autoscaler.io/status`` annotation with compact
  JSON only when it differs from what was last written, ignoring ``time``: a steady state
  writes nothing. Seed ``last_status`` from the watch (``WorkloadWatcher.last_status``) so
  a restarted controller does not rewrite every workload's status, and tell the target
  every later status the watch shows (``observe_status``): what another controller wrote
  (the leader, while this one stands by) replaces what this one last wrote, so a newly
  elected leader rewrites no status unchanged in substance either.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import json
import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from autoscaler.annotations import STATUS_ANNOTATION
from autoscaler.errors import KubeError, KubeNotFoundError, ReplicasChangedError
from autoscaler.kube import KubeClient, operations
from autoscaler.kube.events import MAX_EVENT_MESSAGE, EventQueue, EventRecorder
from autoscaler.logs import log_event
from autoscaler.workload import ReplicaInfo, WorkloadRef

logger = logging.getLogger(__name__)

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
POD_INDEX = "apps.kubernetes.io/pod-index"
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


def _cost(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return 0  # Kubernetes ignores an unparsable cost too


def _owner(meta: Obj) -> str:
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("name") or "")
    return ""


def _ordinal(meta: Obj, kind: str) -> int | None:
    """A StatefulSet pod's ordinal: the ``apps.kubernetes.io/pod-index`` label (1.28+), else
    the name's ``-N`` suffix."""
    if kind != "StatefulSet":
        return None
    text = (meta.get("labels") or {}).get(POD_INDEX) or meta.get("name", "").rpartition("-")[2]
    return int(text) if text.isdigit() else None


def replica_of(pod: Obj, kind: str = "Deployment") -> ReplicaInfo:
    """A pod as the drain protocol ranks it; scheduled means bound to a node."""
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    return ReplicaInfo(
        name=meta.get("name", ""),
        ready=conditions.get("Ready") == "True",
        created_at=_timestamp(meta.get("creationTimestamp")),
        deletion_cost=_cost((meta.get("annotations") or {}).get(DELETION_COST)),
        scheduled=bool(spec.get("nodeName")),
        running=status.get("phase") == "Running",
        owner=_owner(meta),
        ordinal=_ordinal(meta, kind),
    )


def _active(pod: Obj) -> bool:
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    return not meta.get("deletionTimestamp") and status.get("phase") not in ("Succeeded", "Failed")


Transitions = dict[tuple[Any, Any], Any]  # (type, status) → lastTransitionTime


def _transitions(last: Any) -> Transitions | None:
    """What ``_kept_transitions`` reads of the status last written: each condition's
    ``lastTransitionTime`` by (type, status); None when that status is not an object.
    The strings are interned: 10,000 workloads' conditions share a handful of values."""
    if not isinstance(last, dict):
        return None
    try:
        return {
            (_shared(c.get("type")), _shared(c.get("status"))): _shared(c.get("lastTransitionTime"))
            for c in last.get("conditions") or ()
            if isinstance(c, dict)
        }
    except TypeError:  # conditions not a list, or a type or status not a string (hand-made)
        return {}  # nothing to keep: the next write replaces them (it used to raise)


def _shared(value: Any) -> Any:
    return sys.intern(value) if type(value) is str else value


# The transitions last remembered by any target: an equal one is given this one instead
# (never changed once made). Workloads whose conditions flipped in the same second (at a
# start: all of them) share one: ~430 bytes a workload, 4 MB at 10,000 (goal 5).
_last_transitions: list[Transitions] = [{}]


def _shared_transitions(transitions: Transitions | None) -> Transitions | None:
    if transitions is None:
        return None
    if transitions != _last_transitions[0]:
        _last_transitions[0] = transitions
    return _last_transitions[0]


def _kept_transitions(status: Mapping[str, Any], before: Transitions | None) -> Mapping[str, Any]:
    """``status`` with each condition's ``lastTransitionTime`` as last written while its
    status is the same: the time moves only when the status flips, also across a restart
    (``before``, from ``_transitions``, is seeded from the watch), so an unchanged status
    is not rewritten."""
    conditions = status.get("conditions")
    if before is None or not isinstance(conditions, list):
        return status
    kept = [
        {**c, "lastTransitionTime": before.get((c.get("type"), c.get("status")))}
        if before.get((c.get("type"), c.get("status")))
        else c
        for c in conditions
    ]
    return {**status, "conditions": kept}


def _comparable(status: Mapping[str, Any]) -> Any:
    """The status as JSON would give it back, without ``time`` (which always changes)."""
    normal = json.loads(json.dumps(status, default=str))
    normal.pop("time", None)
    return normal


def _seeded(text: str) -> Any:
    """The seed's ``_comparable`` status; None when unreadable (the next write replaces it)."""
    try:
        return _comparable(json.loads(text))
    except (ValueError, TypeError, AttributeError):
        return None


def _canonical(value: Any) -> Any:
    """``value`` (as JSON gives it) with every number written one way per value, so that
    two values are == exactly when their canonical JSON texts are equal: True, 1 and
    1.0 are all 1, -0.0 is 0; dict key order is left to ``sort_keys``. (A NaN equals a
    NaN here, as in the parsed documents: ``json`` gives the same NaN object each time.)"""
    kind = type(value)
    if kind is dict:
        return {k: _canonical(v) for k, v in value.items()}
    if kind is list:
        return [_canonical(v) for v in value]
    if kind is float:
        return int(value) if value.is_integer() else value
    if kind is bool:
        return int(value)
    return value


def _digest(comparable: Any) -> bytes:
    """A fingerprint of a ``_comparable`` status: equal fingerprints for equal statuses
    (``==``), different ones otherwise (BLAKE2b, 128 bits). Kept per workload instead of
    the parsed status: ~3.7 KB of dicts and lists each, 37 MB at 10,000 workloads once
    every status is written (docs/performance.md, goal 5)."""
    text = json.dumps(_canonical(comparable), sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


class KubeTarget:
    """The ``Target`` for one workload; build one per workload with a shared ``KubeClient``."""

    # one per workload: slots, and the Event memory made at the first Event (most
    # workloads never have one): ~3 MB at 10,000 workloads (docs/performance.md, goal 5)
    __slots__ = (
        "_events",
        "_last_digest",
        "_last_transitions",
        "_max_remembered_events",
        "_queue",
        "_ref",
        "_seed",
        "_selector",
        "_uid_seen",
        "_written",
        "kube",
    )  # fmt: skip

    def __init__(
        self,
        kube: KubeClient,
        ref: WorkloadRef,
        *,
        last_status: str | None = None,
        max_remembered_events: int = 8,
        events: EventQueue | None = None,
    ) -> None:
        self.kube = kube
        self._ref = ref
        self._selector: str | None = None
        self._uid_seen: str | None = None
        # The status last written (or seeded), as what write_status compares and keeps of
        # it: its fingerprint (_digest) and its conditions' transition times. The seed is
        # read at the first write, not here while the inventory is listed.
        self._seed = last_status
        # hash() of the annotation's text as this target last knew it on the object
        # (written, seeded or observed): its own write echoing back is not a change
        self._written: int | None = None if last_status is None else hash(last_status)
        self._last_digest: bytes | None = None
        self._last_transitions: Transitions | None = None
        self._events: EventRecorder | None = None
        self._max_remembered_events = max_remembered_events
        self._queue = events

    @property
    def ref(self) -> WorkloadRef:
        return self._ref

    def _fields(self) -> dict[str, Any]:
        return {"namespace": self._ref.namespace, "workload": self._ref.name}

    def _remember(self, scale: Obj) -> ScaleState:
        self._uid_seen = (scale.get("metadata") or {}).get("uid") or self._uid_seen
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

    async def scale(self, replicas: int, *, expected: int | None = None) -> None:
        try:
            scale = await operations.patch_scale(self.kube, self._ref, replicas, expected=expected)
        except KubeError as e:
            if expected is None or e.status != 422:
                raise
            found = (await self.read_scale()).desired  # 422: the test failed, or invalid
            if found == expected:
                raise
            raise ReplicasChangedError(
                f"{self._ref}: spec.replicas is {found}, not {expected}: scaled by someone else",
                found,
            ) from e
        state = self._remember(scale)
        log_event(logger, "scaled", **self._fields(), replicas=replicas, current=state.current)

    async def replicas(self) -> list[ReplicaInfo]:
        selector = self._selector or (await self.read_scale()).selector
        if not selector:
            raise KubeError(f"{self._ref}: the Scale has no status.selector to find its pods")
        pods = await operations.list_pods(self.kube, self._ref.namespace, selector)
        return [replica_of(pod, self._ref.kind) for pod in pods if _active(pod)]

    async def set_deletion_cost(self, name: str, cost: int | None) -> None:
        """A pod already gone (deleted, evicted: 404) needs no rank: nothing to do."""
        value = None if cost is None else str(cost)
        try:
            await operations.patch_pod_annotations(
                self.kube, self._ref.namespace, name, {DELETION_COST: value}
            )
        except KubeNotFoundError:
            log_event(logger, "deletion cost: pod gone", **self._fields(), pod=name, cost=cost)
            return
        log_event(logger, "deletion cost", logging.DEBUG, **self._fields(), pod=name, cost=cost)

    # ---- status -----------------------------------------------------------------------

    async def write_status(self, status: Mapping[str, object]) -> None:
        if self._seed is not None:
            seeded = _seeded(self._seed)
            self._remember_status(seeded, None if seeded is None else _digest(seeded))
            self._seed = None
        status = _kept_transitions(status, self._last_transitions)
        comparable = _comparable(status)
        digest = _digest(comparable)
        if digest == self._last_digest:
            return
        text = json.dumps(status, separators=(",", ":"), sort_keys=True, default=str)
        await operations.patch_workload_annotations(
            self.kube, self._ref, {STATUS_ANNOTATION: text}, background=True
        )
        self._remember_status(comparable, digest)
        self._written = hash(text)
        if self._seed == text:  # the echo, seen by the watch before the PATCH returned
            self._seed = None

    def observe_status(self, text: str | None) -> None:
        """The status annotation as the watch shows it now (None: the workload has none).
        Not this target's own last write echoing back: someone else wrote it — the leader
        while this controller stands by, or a person — and it is what the next write
        compares with, read then as a seed is (parsing each of a leader's 20 writes a
        second here would be wasted on a controller that never leads). Without it, a
        standby elected leader compared with what it saw at its start and rewrote the
        status of every workload the old leader had written since (10,000 PATCHes at 20
        a second at 10,000 workloads: docs/performance.md, goal 7)."""
        if text is None:
            self._seed = self._written = None
            self._remember_status(None, None)
        elif hash(text) != self._written:
            self._seed, self._written = text, hash(text)

    def _remember_status(self, comparable: Any, digest: bytes | None) -> None:
        self._last_digest = digest
        self._last_transitions = _shared_transitions(_transitions(comparable))

    # ---- events -----------------------------------------------------------------------

    async def record_event(self, reason: str, message: str, *, warning: bool = False) -> None:
        if self._queue is not None:
            self._queue.put(functools.partial(self._write_event, reason, message, warning))
            return
        await self._write_event(reason, message, warning)

    async def _write_event(self, reason: str, message: str, warning: bool) -> None:
        if self._events is None:
            self._events = EventRecorder(
                self.kube, self._ref, uid=self._uid, max_remembered=self._max_remembered_events
            )
        event = await self._events.record(reason, message, warning=warning)
        log_event(
            logger,
            "event",
            **self._fields(),
            type=event.get("type"),
            reason=reason,
            count=event.get("count"),
            message=message[:MAX_EVENT_MESSAGE],
        )

    async def _uid(self) -> str | None:
        if self._uid_seen is None:
            # Without the uid the Event still shows by name: never lose it for that.
            with contextlib.suppress(KubeError):  # for an Event: behind scale writes
                self._remember(await operations.read_scale(self.kube, self._ref, background=True))
        return self._uid_seen
