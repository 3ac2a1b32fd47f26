"""The fake controllers: Deployment -> ReplicaSet -> Pods, StatefulSet -> Pods, a kubelet.

The reactor runs synchronously after each API write (``run()``), until nothing changes:
deterministic, and settled before the write's response is sent.

What it models (and a fake test may rely on):
- a Deployment's one ReplicaSet, and scale-down victims ranked as ``ActivePodsWithRanks``
  does (see ``deletion_rank``), minus the two criteria that tie in a one-node fake:
  co-located pods, and ready time (LogarithmicScaleDown buckets it by powers of two, so
  pods started together tie);
- StatefulSets as ``StatefulSetControl`` does: missing ordinals created lowest first, ordinals
  >= replicas removed highest first, ``pod-deletion-cost`` ignored; under OrderedReady one
  pod per pass, each pass waiting for the previous pod to be created or gone, and nothing
  while a lower pod is not Running and Ready (the first unhealthy pod excepted, as
  ``processCondemned`` allows); Parallel does all at once;
- readiness changed by the test (``set_pod_ready``), a conditional ``/scale`` (JSON patch
  ``test``, 422) and a 404 on a gone victim, as the real API server does.

What it does not model — no fake test can see it; the real behaviour is tested in
``tests/cluster/`` (the scenario named):
- rollouts: a template change of a Deployment or StatefulSet is refused with 422 ("rollouts
  are not modelled by the fake; use tests/cluster"). Kubernetes keeps two ReplicaSets with
  pods for a while (or for good while paused) and splits a scale-down across them in
  proportion (``test_rollout.py``);
- graceful deletion: pods start Running and Ready at once on node ``fake-node`` and a delete
  removes them at once (no deletionTimestamp, ``terminationGracePeriodSeconds`` ignored).
  A real pod stays listed, with a ``deletionTimestamp``, until its containers exit, and a
  StatefulSet waits for that (every drain scenario, ``tests/cluster/node.py``,
  ``test_drain_surprises.py``). Many fast tests rely on the deletion being immediate, so
  the fake keeps it and makes no claim about the terminating state.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from typing import Any

from tests.fakekube.model import FakeClock, Ids, Obj, StorageKey, deep, format_time, meta
from tests.fakekube.resources import ResourceType, canonical
from tests.fakekube.store import ObjKey, Store, WatchEvent

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
NODE_NAME = "fake-node"
DEPLOYMENTS: StorageKey = ("apps", "deployments")
REPLICASETS: StorageKey = ("apps", "replicasets")
STATEFULSETS: StorageKey = ("apps", "statefulsets")
PODS: StorageKey = ("", "pods")
_PHASE_ORDINAL = {"Pending": 0, "Unknown": 1, "Running": 2}
_NOT_COPIED = ("kubectl.kubernetes.io/last-applied-configuration",
               "deployment.kubernetes.io/revision")


def apply_defaults(obj: Obj, now: dt.datetime) -> None:
    """Defaulting the API server (and a fake kubelet, for bare pods) would do."""
    kind = obj.get("kind")
    spec = obj.setdefault("spec", {}) if kind not in ("Event", "Namespace", None) else {}
    if kind in ("Deployment", "ReplicaSet", "StatefulSet"):
        spec.setdefault("replicas", 1)
    if kind == "Deployment":
        spec.setdefault("strategy", {"type": "RollingUpdate", "rollingUpdate":
                                     {"maxSurge": "25%", "maxUnavailable": "25%"}})
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
    elif kind == "StatefulSet":
        spec.setdefault("podManagementPolicy", "OrderedReady")
        spec.setdefault("serviceName", "")
    elif kind == "Namespace":
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj["status"] = {"phase": "Active"}
    elif kind == "Pod":
        spec.setdefault("restartPolicy", "Always")
        spec.setdefault("terminationGracePeriodSeconds", 30)
        spec.setdefault("schedulerName", "default-scheduler")
        if not obj.get("status"):  # a new pod: scheduled and started by the fake kubelet
            spec.setdefault("nodeName", NODE_NAME)
            obj["status"] = running_status(spec, format_time(now), 0)


def running_status(spec: Obj, stamp: str, ip_index: int) -> Obj:
    containers = spec.get("containers") or []

    def condition(kind: str) -> Obj:
        return {"type": kind, "status": "True", "lastProbeTime": None,
                "lastTransitionTime": stamp}

    return {
        "phase": "Running",
        "conditions": [condition(c) for c in
                       ("PodReadyToStartContainers", "Initialized", "Ready",
                        "ContainersReady", "PodScheduled")],
        "hostIP": "10.0.0.1",
        "podIP": f"10.244.{ip_index // 250}.{ip_index % 250 + 2}",
        "startTime": stamp,
        "qosClass": "BestEffort",
        "containerStatuses": [
            {"name": c["name"], "image": c.get("image", ""), "imageID": "",
             "containerID": f"containerd://{c['name']}", "ready": True, "restartCount": 0,
             "started": True, "state": {"running": {"startedAt": stamp}}}
            for c in containers
        ],
    }


def is_ready(pod: Obj) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _running_and_ready(pod: Obj) -> bool:
    return pod.get("status", {}).get("phase") == "Running" and is_ready(pod)


def is_active(pod: Obj) -> bool:
    return (pod.get("status", {}).get("phase") not in ("Succeeded", "Failed")
            and not pod["metadata"].get("deletionTimestamp"))


def deletion_cost(pod: Obj) -> int:
    """The pod-deletion-cost annotation as an int32; absent or invalid means 0."""
    raw = (pod["metadata"].get("annotations") or {}).get(DELETION_COST)
    if raw is None or not re.fullmatch(r"[+-]?\d+", raw):
        return 0
    value = int(raw)
    return value if -(2**31) <= value < 2**31 else 0


def deletion_rank(pod: Obj) -> tuple[Any, ...]:
    """Sort key: the pods a ReplicaSet deletes first come first (``ActivePodsWithRanks``)."""
    status = pod.get("status", {})
    restarts = max((c.get("restartCount", 0) for c in status.get("containerStatuses") or []),
                   default=0)
    created = pod["metadata"].get("creationTimestamp") or ""
    return (
        bool(pod.get("spec", {}).get("nodeName")),  # unassigned first
        _PHASE_ORDINAL.get(status.get("phase", "Pending"), 0),  # Pending < Unknown < Running
        is_ready(pod),  # not ready first
        deletion_cost(pod),  # lower cost first
        -restarts,  # more restarts first
        created != "",  # no creation time first ...
        _Desc(created),  # ... then newer first
        pod["metadata"]["name"],
    )


class _Desc(str):
    """A string that sorts in reverse (RFC 3339 UTC stamps sort like times)."""

    def __lt__(self, other: str) -> bool:
        return str.__gt__(self, other)

    def __gt__(self, other: str) -> bool:
        return str.__lt__(self, other)


def template_hash(template: Obj) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
    return "".join(Ids.ALPHANUMS[b % len(Ids.ALPHANUMS)] for b in digest[:10])


def owner_ref(owner: Obj) -> Obj:
    m = owner["metadata"]
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": m["name"],
            "uid": m["uid"], "controller": True, "blockOwnerDeletion": True}


def controller_of(obj: Obj) -> Obj | None:
    refs = obj["metadata"].get("ownerReferences") or []
    return next((r for r in refs if r.get("controller")), None)


class Reactor:
    """Reconciles workloads after each write, until a fixed point (``run``)."""

    def __init__(self, store: Store, clock: FakeClock, ids: Ids) -> None:
        self.store = store
        self.clock = clock
        self.ids = ids
        self.enabled = True
        self._dirty: dict[ObjKey, None] = {}  # an ordered set: deterministic order
        self._ips = 0
        self._running = False
        store.listeners.append(self._on_event)

    def _on_event(self, event: WatchEvent) -> None:
        m = event.obj["metadata"]
        if event.storage in (DEPLOYMENTS, REPLICASETS, STATEFULSETS):
            self._dirty[(event.storage, event.namespace, m["name"])] = None
        if event.storage in (REPLICASETS, PODS):
            ref = controller_of(event.obj)
            kinds = {"Deployment": DEPLOYMENTS, "ReplicaSet": REPLICASETS,
                     "StatefulSet": STATEFULSETS}
            if ref and ref["kind"] in kinds:
                self._dirty[(kinds[ref["kind"]], event.namespace, ref["name"])] = None

    def run(self) -> None:
        if self._running or not self.enabled:
            return
        self._running = True
        try:
            for _ in range(100_000):
                if not self._dirty:
                    return
                key = next(iter(self._dirty))
                del self._dirty[key]
                self._reconcile(key)
            raise RuntimeError("fakekube reactor did not settle")
        finally:
            self._running = False

    def _reconcile(self, key: ObjKey) -> None:
        storage, namespace, name = key
        obj = self.store.get(storage, namespace, name)
        if obj is None:
            return
        if storage == DEPLOYMENTS:
            self._deployment(obj)
        elif storage == REPLICASETS:
            self._replicaset(obj)
        else:
            self._statefulset(obj)

    def _owned(self, owner: Obj, storage: StorageKey) -> list[Obj]:
        found = (self.store.get(*key) for key in self.store.children(owner["metadata"]["uid"])
                 if key[0] == storage)
        return [o for o in found if o is not None]

    def _replace_status(self, obj: Obj, status: Obj) -> None:
        status = {k: v for k, v in status.items() if v != 0 or k in ("replicas",)}
        if obj.get("status") != status:
            new = deep(obj)
            new["status"] = status
            self.store.replace(_storage_of(obj), new)

    # ---- Deployment ---------------------------------------------------------------------

    def _deployment(self, deploy: Obj) -> None:
        m, spec = deploy["metadata"], deploy["spec"]
        pod_hash = template_hash(spec["template"])
        owned = self._owned(deploy, REPLICASETS)
        current = next((rs for rs in owned if rs["metadata"]["name"] == f"{m['name']}-{pod_hash}"),
                       None)
        revision = str(len(owned) + (current is None))
        if current is None:
            current = self._new_replicaset(deploy, pod_hash, revision)
            owned.append(current)
        else:
            revision = (current["metadata"].get("annotations") or {}).get(
                "deployment.kubernetes.io/revision", revision)
        for rs in owned:
            replicas = spec["replicas"] if rs is current else 0
            self._sync_replicaset(deploy, rs, replicas, revision if rs is current else None)
        annotations = m.get("annotations") or {}
        if annotations.get("deployment.kubernetes.io/revision") != revision:
            new = deep(deploy)
            meta(new).setdefault("annotations", {})["deployment.kubernetes.io/revision"] = revision
            deploy = self.store.replace(DEPLOYMENTS, new)
        owned = [self.store.get(REPLICASETS, m["namespace"], rs["metadata"]["name"]) or rs
                 for rs in owned]
        counts = {k: sum(rs.get("status", {}).get(k, 0) for rs in owned)
                  for k in ("replicas", "readyReplicas", "availableReplicas")}
        cur = next(rs for rs in owned if rs["metadata"]["uid"] == current["metadata"]["uid"])
        self._replace_status(deploy, {
            "observedGeneration": deploy["metadata"].get("generation", 1),
            **counts,
            "updatedReplicas": cur.get("status", {}).get("replicas", 0),
            "unavailableReplicas": max(0, spec["replicas"] - counts["availableReplicas"]),
        })

    def _rs_annotations(self, deploy: Obj, revision: str) -> dict[str, str]:
        source = deploy["metadata"].get("annotations") or {}
        annotations = {k: v for k, v in source.items() if k not in _NOT_COPIED}
        replicas = str(deploy["spec"]["replicas"])
        annotations.update({"deployment.kubernetes.io/desired-replicas": replicas,
                            "deployment.kubernetes.io/max-replicas": replicas,
                            "deployment.kubernetes.io/revision": revision})
        return annotations

    def _new_replicaset(self, deploy: Obj, pod_hash: str, revision: str) -> Obj:
        m, spec = deploy["metadata"], deploy["spec"]
        template = deep(spec["template"])
        meta(template).setdefault("labels", {})["pod-template-hash"] = pod_hash
        selector = deep(spec["selector"])
        selector.setdefault("matchLabels", {})["pod-template-hash"] = pod_hash
        rs = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": f"{m['name']}-{pod_hash}", "namespace": m["namespace"],
                         "labels": dict(template["metadata"]["labels"]),
                         "annotations": self._rs_annotations(deploy, revision),
                         "ownerReferences": [owner_ref(deploy)]},
            "spec": {"replicas": 0, "minReadySeconds": spec.get("minReadySeconds", 0),
                     "selector": selector, "template": template},
            "status": {"replicas": 0},
        }
        return self.store.create(canonical("replicasets"), rs, m["namespace"])

    def _sync_replicaset(self, deploy: Obj, rs: Obj, replicas: int, revision: str | None) -> None:
        new = deep(rs)
        new["spec"]["replicas"] = replicas
        if revision is not None:
            new["metadata"]["annotations"] = self._rs_annotations(deploy, revision)
        if new["spec"] != rs["spec"]:
            new["metadata"]["generation"] = rs["metadata"].get("generation", 1) + 1
        self.store.replace(REPLICASETS, new)

    # ---- ReplicaSet ---------------------------------------------------------------------

    def _replicaset(self, rs: Obj) -> None:
        pods = [p for p in self._owned(rs, PODS) if is_active(p)]
        want = rs["spec"].get("replicas", 1)
        for _ in range(want - len(pods)):
            name = f"{rs['metadata']['name']}-{self.ids.suffix()}"
            while self.store.get(PODS, rs["metadata"]["namespace"], name) is not None:
                name = f"{rs['metadata']['name']}-{self.ids.suffix()}"
            pods.append(self._new_pod(rs, name))
        if len(pods) > want:
            victims = sorted(pods, key=deletion_rank)[: len(pods) - want]
            for pod in victims:
                self.store.delete(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"])
            pods = [p for p in pods if p not in victims]
        ready = sum(is_ready(p) for p in pods)
        self._replace_status(rs, {"replicas": len(pods), "fullyLabeledReplicas": len(pods),
                                  "readyReplicas": ready, "availableReplicas": ready,
                                  "observedGeneration": rs["metadata"].get("generation", 1)})

    def _new_pod(self, owner: Obj, name: str, extra_labels: dict[str, str] | None = None,
                 spec_extra: Obj | None = None) -> Obj:
        template = owner["spec"]["template"]
        tm = template.get("metadata") or {}
        spec = {**deep(template.get("spec") or {}), "nodeName": NODE_NAME, **(spec_extra or {})}
        stamp = self.clock.stamp()
        self._ips += 1
        pod: Obj = {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": owner["metadata"]["namespace"],
                         "labels": {**(tm.get("labels") or {}), **(extra_labels or {})},
                         "annotations": dict(tm.get("annotations") or {}),
                         "ownerReferences": [owner_ref(owner)]},
            "spec": spec,
            "status": running_status(spec, stamp, self._ips),
        }
        if not pod["metadata"]["annotations"]:
            del pod["metadata"]["annotations"]
        if owner["kind"] == "ReplicaSet":
            pod["metadata"]["generateName"] = f"{owner['metadata']['name']}-"
        apply_defaults(pod, self.clock.now())
        return self.store.create(canonical("pods"), pod, owner["metadata"]["namespace"],
                                 stamp=stamp)

    # ---- StatefulSet --------------------------------------------------------------------

    def _statefulset(self, sts: Obj) -> None:
        """``StatefulSetControl``: create missing ordinals lowest first, remove ordinals >=
        replicas highest first. Under OrderedReady (the default) one pod per pass, and
        nothing while a lower pod is not Running and Ready (except that the first unhealthy
        pod may itself be removed, as ``processCondemned`` allows); the pass ends with the
        write, and the pod's watch event brings the next one."""
        m = sts["metadata"]
        want = sts["spec"].get("replicas", 1)
        monotonic = sts["spec"].get("podManagementPolicy", "OrderedReady") == "OrderedReady"
        pods = {p["metadata"]["name"]: p for p in self._owned(sts, PODS) if is_active(p)}
        ordinal_of = {name: int(name.rsplit("-", 1)[1]) for name in pods
                      if re.fullmatch(rf"{re.escape(m['name'])}-\d+", name)}
        unhealthy = sorted((o, n) for n, o in ordinal_of.items()
                           if not _running_and_ready(pods[n]))
        first_unhealthy = unhealthy[0][1] if unhealthy else None
        settled = True
        for ordinal in range(want):
            name = f"{m['name']}-{ordinal}"
            if name not in pods and self.store.get(PODS, m["namespace"], name) is None:
                labels = {"statefulset.kubernetes.io/pod-name": name,
                          "apps.kubernetes.io/pod-index": str(ordinal)}
                spec_extra = {"hostname": name, "subdomain": sts["spec"].get("serviceName", "")}
                pods[name] = self._new_pod(sts, name, labels, spec_extra)
                if monotonic:
                    settled = False
                    break
            elif name in pods and monotonic and not _running_and_ready(pods[name]):
                settled = False
                break
        condemned = sorted((n for n, o in ordinal_of.items() if o >= want),
                           key=ordinal_of.__getitem__, reverse=True)
        for name in condemned if settled else ():
            if monotonic and not _running_and_ready(pods[name]) and name != first_unhealthy:
                break
            self.store.delete(PODS, m["namespace"], name)
            del pods[name]
            if monotonic:
                break
        ready = sum(is_ready(p) for p in pods.values())
        revision = f"{m['name']}-{template_hash(sts['spec']['template'])}"
        self._replace_status(sts, {
            "observedGeneration": m.get("generation", 1), "replicas": len(pods),
            "readyReplicas": ready, "availableReplicas": ready,
            "currentReplicas": len(pods), "updatedReplicas": len(pods),
            "currentRevision": revision, "updateRevision": revision, "collisionCount": 0,
        })


def _storage_of(obj: Obj) -> StorageKey:
    group = obj["apiVersion"].rpartition("/")[0]
    rt: ResourceType = canonical(obj["kind"])
    return (group, rt.plural)
