"""Server-side printing: the ``meta.k8s.io/v1`` Table that ``kubectl get`` asks for.

kubectl sends ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io,...``; without a
Table it falls back to NAME/AGE. The columns follow the real printers for the kinds a
human looks at here; ages are measured on the fake clock.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from tests.fakekube.model import Obj

Cells = Callable[[Obj], list[object]]


def wants_table(accept: str) -> bool:
    return any("as=Table" in part and "g=meta.k8s.io" in part for part in accept.split(","))


def _age(obj: Obj, now: dt.datetime) -> str:
    stamp = obj.get("metadata", {}).get("creationTimestamp")
    if not stamp:
        return "<unknown>"
    created = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    seconds = max(0, int((now - created).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _workload(obj: Obj) -> list[object]:
    status, spec = obj.get("status", {}), obj.get("spec", {})
    return [f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
            status.get("updatedReplicas", 0), status.get("availableReplicas", 0)]


def _pod(obj: Obj) -> list[object]:
    statuses = obj.get("status", {}).get("containerStatuses") or []
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(c.get("restartCount", 0) for c in statuses)
    phase = obj.get("status", {}).get("phase", "Pending")
    return [f"{ready}/{len(statuses)}", phase, restarts]


def _replicaset(obj: Obj) -> list[object]:
    status = obj.get("status", {})
    return [obj.get("spec", {}).get("replicas", 1), status.get("replicas", 0),
            status.get("readyReplicas", 0)]


_COLUMNS: dict[str, tuple[tuple[str, ...], Cells]] = {
    "Deployment": (("Ready", "Up-to-date", "Available"), _workload),
    "StatefulSet": (("Ready", "Up-to-date", "Available"), _workload),
    "ReplicaSet": (("Desired", "Current", "Ready"), _replicaset),
    "Pod": (("Ready", "Status", "Restarts"), _pod),
}


def table(kind: str, objects: list[Obj], resource_version: str, now: dt.datetime) -> Obj:
    names, cells = _COLUMNS.get(kind, ((), lambda _obj: []))
    columns = [{"name": "Name", "type": "string", "format": "name", "description": "",
                "priority": 0}]
    columns += [{"name": n, "type": "string", "format": "", "description": "", "priority": 0}
                for n in names]
    columns.append({"name": "Age", "type": "string", "format": "", "description": "",
                    "priority": 0})
    rows = [{"cells": [o["metadata"]["name"], *cells(o), _age(o, now)],
             "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                        "metadata": o["metadata"]}}
            for o in objects]
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": columns, "rows": rows}
