"""The resources the fake serves, and the discovery documents describing them.

A ``ResourceType`` is one (group, version, plural) endpoint. Versions of one resource share
a storage key; the only conversion done is for Events (core/v1 <-> events.k8s.io/v1),
whose field names differ. autoscaling/v1 and v2 HPAs share storage unconverted (the fake
only stores them so the controller can see which workloads an HPA targets).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tests.fakekube.model import KubeError, Obj, StorageKey

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
SUB_VERBS = ("get", "patch", "update")

Converter = Callable[[Obj], Obj]


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    subresources: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    # Extra field-selector labels beyond metadata.name / metadata.namespace.
    field_labels: tuple[str, ...] = ()
    # Workloads count spec changes in metadata.generation.
    has_generation: bool = False
    storage_override: StorageKey | None = None
    # Convert stored (canonical) objects to this version and back; identity when None.
    to_version: Converter | None = field(default=None, compare=False)
    from_version: Converter | None = field(default=None, compare=False)

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def storage(self) -> StorageKey:
        return self.storage_override or (self.group, self.plural)

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def output(self, stored: Obj) -> Obj:
        """The stored object as this version shows it (a new dict)."""
        obj = self.to_version(stored) if self.to_version else dict(stored)
        obj["apiVersion"] = self.api_version
        obj["kind"] = self.kind
        return obj

    def input(self, obj: Obj) -> Obj:
        """An object sent in this version, in storage form."""
        stored = self.from_version(obj) if self.from_version else dict(obj)
        stored["apiVersion"] = self.api_version if not self.from_version else "v1"
        stored["kind"] = self.kind
        return stored


# core/v1 Event field <-> events.k8s.io/v1 Event field.
_EVENT_FIELDS = {
    "involvedObject": "regarding",
    "message": "note",
    "reportingComponent": "reportingController",
    "source": "deprecatedSource",
    "firstTimestamp": "deprecatedFirstTimestamp",
    "lastTimestamp": "deprecatedLastTimestamp",
    "count": "deprecatedCount",
}
_EVENT_FIELDS_BACK = {v: k for k, v in _EVENT_FIELDS.items()}


def _event_to_v1(stored: Obj) -> Obj:
    out = {_EVENT_FIELDS.get(k, k): v for k, v in stored.items()}
    # eventTime is required by events.k8s.io clients; old-style events only have timestamps.
    if not out.get("eventTime"):
        created = stored.get("metadata", {}).get("creationTimestamp")
        out["eventTime"] = _micro(stored.get("firstTimestamp") or created)
    return out


def _event_from_v1(obj: Obj) -> Obj:
    return {_EVENT_FIELDS_BACK.get(k, k): v for k, v in obj.items()}


def _micro(stamp: object) -> str | None:
    if isinstance(stamp, str) and stamp.endswith("Z") and "." not in stamp:
        return stamp[:-1] + ".000000Z"
    return stamp if isinstance(stamp, str) else None


_POD_FIELDS = ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
               "spec.serviceAccountName", "status.phase", "status.podIP",
               "status.nominatedNodeName")
_EVENT_FIELD_LABELS = ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                       "involvedObject.uid", "involvedObject.apiVersion",
                       "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason",
                       "reportingComponent", "source", "type")
_HPA = ("horizontalpodautoscalers", "HorizontalPodAutoscaler")

RESOURCES: tuple[ResourceType, ...] = (
    ResourceType("", "v1", "namespaces", "Namespace", namespaced=False, short_names=("ns",),
                 subresources=("status",), field_labels=("status.phase",)),
    ResourceType("", "v1", "pods", "Pod", short_names=("po",), subresources=("status",),
                 categories=("all",), field_labels=_POD_FIELDS),
    ResourceType("", "v1", "events", "Event", short_names=("ev",),
                 field_labels=_EVENT_FIELD_LABELS),
    ResourceType("apps", "v1", "deployments", "Deployment", short_names=("deploy",),
                 subresources=("scale", "status"), categories=("all",), has_generation=True),
    ResourceType("apps", "v1", "replicasets", "ReplicaSet", short_names=("rs",),
                 subresources=("scale", "status"), categories=("all",), has_generation=True),
    ResourceType("apps", "v1", "statefulsets", "StatefulSet", short_names=("sts",),
                 subresources=("scale", "status"), categories=("all",), has_generation=True),
    ResourceType("coordination.k8s.io", "v1", "leases", "Lease"),
    ResourceType("events.k8s.io", "v1", "events", "Event", short_names=("ev",),
                 storage_override=("", "events"), to_version=_event_to_v1,
                 from_version=_event_from_v1),
    ResourceType("autoscaling", "v2", *_HPA, short_names=("hpa",), subresources=("status",),
                 categories=("all",), has_generation=True),
    ResourceType("autoscaling", "v1", *_HPA, short_names=("hpa",), subresources=("status",),
                 categories=("all",), has_generation=True),
)

# Preferred version first, as discovery lists them.
GROUP_VERSIONS: dict[str, tuple[str, ...]] = {
    "apps": ("v1",),
    "autoscaling": ("v2", "v1"),
    "coordination.k8s.io": ("v1",),
    "events.k8s.io": ("v1",),
}


def lookup(group: str, version: str, plural: str) -> ResourceType:
    for rt in RESOURCES:
        if (rt.group, rt.version, rt.plural) == (group, version, plural):
            return rt
    raise KubeError(404, f"the server could not find the requested resource ({plural})")


def canonical(name: str) -> ResourceType:
    """The resource for a kind, plural, singular or short name ('Deployment', 'deploy', ...).

    Where several versions exist, the storage version (the first registered) wins.
    """
    wanted = name.lower()
    for rt in RESOURCES:
        if wanted in (rt.kind.lower(), rt.plural, rt.singular, *rt.short_names):
            return rt
    raise KeyError(name)


def for_storage(storage: StorageKey) -> ResourceType:
    for rt in RESOURCES:
        if rt.storage == storage and rt.storage_override is None:
            return rt
    raise KeyError(storage)


def _resource_entries(rt: ResourceType) -> list[Obj]:
    entries: list[Obj] = [{
        "name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced,
        "kind": rt.kind, "verbs": list(ALL_VERBS),
        **({"shortNames": list(rt.short_names)} if rt.short_names else {}),
        **({"categories": list(rt.categories)} if rt.categories else {}),
    }]
    for sub in rt.subresources:
        entry: Obj = {"name": f"{rt.plural}/{sub}", "singularName": "",
                      "namespaced": rt.namespaced, "kind": rt.kind, "verbs": list(SUB_VERBS)}
        if sub == "scale":
            entry.update(group="autoscaling", version="v1", kind="Scale")
        entries.append(entry)
    return entries


def api_resource_list(group: str, version: str) -> Obj:
    rts = [rt for rt in RESOURCES if (rt.group, rt.version) == (group, version)]
    if not rts:
        raise KeyError((group, version))
    resources = [entry for rt in rts for entry in _resource_entries(rt)]
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
            "resources": resources}


def api_group(name: str) -> Obj:
    versions = [{"groupVersion": f"{name}/{v}", "version": v} for v in GROUP_VERSIONS[name]]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": name, "versions": versions,
            "preferredVersion": versions[0]}


def api_group_list() -> Obj:
    groups = [api_group(name) for name in GROUP_VERSIONS]
    for g in groups:
        del g["kind"], g["apiVersion"]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_versions(server_address: str) -> Obj:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                            "serverAddress": server_address}]}


VERSION_INFO: Obj = {
    "major": "1", "minor": "32", "gitVersion": "v1.32.0-fakekube",
    "gitCommit": "0" * 40, "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.23.0", "compiler": "gc", "platform": "linux/amd64",
}
