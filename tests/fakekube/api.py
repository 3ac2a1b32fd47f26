"""REST semantics over the store: what get/list/create/update/patch/delete mean.

Everything here speaks in objects of one API version (``rt``), raises ``KubeError`` for
the HTTP layer to turn into a ``Status``, and calls ``after_write`` after each real write
so the reactor (the fake controllers) settles before the response goes out.
Preconditions follow the API server: a PUT or PATCH carrying a stale
``metadata.resourceVersion`` is a 409 Conflict; without one the write is unconditional.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from tests.fakekube import patch as patching
from tests.fakekube import reactor, selectors
from tests.fakekube.model import (
    KubeError,
    Obj,
    conflict,
    deep,
    labels_of,
    meta,
    not_found,
    status_body,
)
from tests.fakekube.resources import RESOURCES, ResourceType, canonical
from tests.fakekube.store import Store

# Kept from the stored object on every update: the server owns these.
_SERVER_META = ("uid", "creationTimestamp", "generation", "deletionTimestamp", "namespace")
_WORKLOAD_KINDS = ("Deployment", "ReplicaSet", "StatefulSet")
# A template change starts a rollout (Deployment: a new ReplicaSet beside the old one, scaled
# in proportion; StatefulSet: pods replaced highest ordinal first). The fake models neither,
# so it refuses the change instead of showing a rollout that Kubernetes would not do.
_ROLLED_KINDS = ("Deployment", "StatefulSet")


class Api:
    def __init__(self, store: Store, *, auto_namespaces: bool,
                 after_write: Callable[[], None]) -> None:
        self.store = store
        self.auto_namespaces = auto_namespaces
        self.after_write = after_write

    # ---- reads --------------------------------------------------------------------------

    def stored(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        obj = self.store.get(rt.storage, namespace if rt.namespaced else "", name)
        if obj is None:
            raise not_found(rt.plural, name, rt.group)
        return obj

    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        return rt.output(deep(self.stored(rt, namespace, name)))

    def select(self, rt: ResourceType, namespace: str | None, label_selector: str | None,
               field_selector: str | None) -> list[Obj]:
        reqs = selectors.parse_label_selector(label_selector)
        fields = selectors.parse_field_selector(field_selector, rt.field_labels)
        return [obj for obj in self.store.items(rt.storage, namespace)
                if selectors.matches_labels(reqs, labels_of(obj)) and fields(obj)]

    def list(self, rt: ResourceType, namespace: str | None, *, label_selector: str | None = None,
             field_selector: str | None = None, limit: int = 0, token: str | None = None) -> Obj:
        list_meta: Obj = {"resourceVersion": str(self.store.rv)}
        start = _decode_continue(token) if token else None
        selected = label_selector or field_selector
        if limit > 0 and selected:
            # A page stops at limit + 1 matches (as the real server, which then cannot
            # tell how many remain: no remainingItemCount with a selector). Selecting all
            # of 10,000 objects for each of 20 pages took the fake ~2 s per listing.
            reqs = selectors.parse_label_selector(label_selector)
            fields = selectors.parse_field_selector(field_selector, rt.field_labels)
            items = []
            for obj in self.store.items(rt.storage, namespace):
                if start is not None and not _sort_key(obj) > start:
                    continue
                if selectors.matches_labels(reqs, labels_of(obj)) and fields(obj):
                    items.append(obj)
                    if len(items) > limit:
                        break
        else:
            items = self.select(rt, namespace, label_selector, field_selector)
            if start is not None:
                items = [o for o in items if _sort_key(o) > start]
        if limit > 0 and len(items) > limit:
            list_meta["continue"] = _encode_continue(_sort_key(items[limit - 1]))
            if not selected:
                list_meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        out = []
        for item in items:
            obj = rt.output(deep(item))
            del obj["apiVersion"], obj["kind"]  # as the real server: list items carry neither
            out.append(obj)
        return {"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": list_meta,
                "items": out}

    # ---- writes -------------------------------------------------------------------------

    def create(self, rt: ResourceType, namespace: str, body: Any, *, dry_run: bool = False) -> Obj:
        obj = self._check_body(rt, body, namespace)
        if rt.namespaced:
            self.ensure_namespace(namespace)
        obj = rt.input(obj)
        reactor.apply_defaults(obj, self.store.clock.now())
        _validate(rt, obj)
        created = self.store.create(rt, obj, namespace if rt.namespaced else "", dry_run=dry_run)
        if not dry_run:
            self.after_write()
        return rt.output(created)

    def update(self, rt: ResourceType, namespace: str, name: str, body: Any, *,
               subresource: str = "", dry_run: bool = False) -> Obj:
        if subresource == "scale":
            return self._update_scale(rt, namespace, name, body, dry_run)
        current = self.stored(rt, namespace, name)
        obj = rt.input(self._check_body(rt, body, namespace, name))
        rv = obj.get("metadata", {}).get("resourceVersion")
        if rv and rv != current["metadata"]["resourceVersion"]:
            raise conflict(rt.plural, name, rt.group)
        new = deep(current)
        if subresource == "status":
            new["status"] = obj.get("status", {})
        else:
            new = self._merge_main(rt, current, obj)
        return self._commit(rt, new, dry_run)

    def patch(self, rt: ResourceType, namespace: str, name: str, content_type: str, body: Any,
              *, subresource: str = "", dry_run: bool = False) -> Obj:
        if subresource == "scale":
            scale = scale_of(rt, self.stored(rt, namespace, name))
            patched = patching.apply_patch(content_type, scale, body)
            return self._update_scale(rt, namespace, name, patched, dry_run)
        current = rt.output(deep(self.stored(rt, namespace, name)))
        patched = patching.apply_patch(content_type, current, body)
        return self.update(rt, namespace, name, patched, subresource=subresource, dry_run=dry_run)

    def delete(self, rt: ResourceType, namespace: str, name: str,
               options: Obj | None = None) -> Obj:
        options = options or {}
        current = self.stored(rt, namespace, name)
        pre = options.get("preconditions") or {}
        for field, label in (("uid", "UID"), ("resourceVersion", "ResourceVersion")):
            if pre.get(field) and pre[field] != current["metadata"][field]:
                raise KubeError(409, f"Precondition failed: {label} in precondition: "
                                     f"{pre[field]}, {label} in object meta: "
                                     f"{current['metadata'][field]}")
        deleted = self.delete_cascading(rt.storage, current, options.get("propagationPolicy"))
        self.after_write()
        if rt.plural == "pods":
            return rt.output(deleted)
        uid = deleted["metadata"]["uid"]
        return status_body(200, "", "", {"name": name, "group": rt.group, "kind": rt.plural,
                                         "uid": uid})

    def delete_cascading(self, storage: tuple[str, str], obj: Obj, policy: str | None) -> Obj:
        """Delete ``obj`` and what it owns, like the garbage collector (no grace periods)."""
        m = obj["metadata"]
        if storage == ("", "namespaces"):
            for rt in RESOURCES:
                if rt.namespaced and rt.storage_override is None:
                    for child in list(self.store.items(rt.storage, m["name"])):
                        self.store.delete(rt.storage, m["name"], child["metadata"]["name"])
        for child_storage, ns, child_name in self.store.children(m["uid"]):
            found = self.store.get(child_storage, ns, child_name)
            if found is None:
                continue
            child = found
            if policy == "Orphan":
                new = deep(child)
                refs = [r for r in meta(new).get("ownerReferences", []) if r["uid"] != m["uid"]]
                if refs:
                    meta(new)["ownerReferences"] = refs
                else:
                    meta(new).pop("ownerReferences", None)
                self.store.replace(child_storage, new)
            else:
                self.delete_cascading(child_storage, child, policy)
        return self.store.delete(storage, m.get("namespace", ""), m["name"])

    def delete_collection(self, rt: ResourceType, namespace: str | None,
                          label_selector: str | None, field_selector: str | None) -> Obj:
        doomed = self.select(rt, namespace, label_selector, field_selector)
        items = [rt.output(self.delete_cascading(rt.storage, deep(o), None)) for o in doomed]
        self.after_write()
        return {"kind": rt.list_kind, "apiVersion": rt.api_version,
                "metadata": {"resourceVersion": str(self.store.rv)}, "items": items}

    def ensure_namespace(self, namespace: str) -> None:
        if self.store.get(("", "namespaces"), "", namespace) is not None:
            return
        if not self.auto_namespaces:
            raise not_found("namespaces", namespace)
        self.store.create(canonical("namespaces"), {"apiVersion": "v1", "kind": "Namespace",
                                                    "metadata": {"name": namespace}}, "")

    # ---- helpers ------------------------------------------------------------------------

    def _check_body(self, rt: ResourceType, body: Any, namespace: str, name: str = "") -> Obj:
        if not isinstance(body, dict):
            raise KubeError(400, "the body of the request must be a JSON object")
        if body.get("kind") not in (None, "", rt.kind):
            raise KubeError(400, f"the kind of the object ({body['kind']}) does not match "
                                 f"the resource ({rt.kind})")
        m = body.get("metadata") or {}
        if rt.namespaced and m.get("namespace") not in (None, "", namespace):
            raise KubeError(400, "the namespace of the provided object does not match the "
                                 "namespace sent on the request")
        if name and m.get("name") not in (None, "", name):
            raise KubeError(400, f"the name of the object ({m['name']}) does not match the "
                                 f"name on the URL ({name})")
        obj = deep(body)
        if name:
            meta(obj)["name"] = name
        return obj

    def _merge_main(self, rt: ResourceType, current: Obj, obj: Obj) -> Obj:
        """An update of the main resource: server-owned metadata and status are kept."""
        new = deep(obj)
        m, old = meta(new), current["metadata"]
        for key in _SERVER_META:
            if key in old:
                m[key] = old[key]
            else:
                m.pop(key, None)
        m["resourceVersion"] = old["resourceVersion"]
        if "status" in rt.subresources:
            new["status"] = deep(current.get("status", {}))
        reactor.apply_defaults(new, self.store.clock.now())
        if (rt.kind in _ROLLED_KINDS
                and (new.get("spec") or {}).get("template") != current["spec"].get("template")):
            qualified = f"{rt.kind}.{rt.group}"
            raise KubeError(422, f'{qualified} "{old["name"]}" '
                                 "is invalid: spec.template: Forbidden: rollouts are not "
                                 "modelled by the fake; use tests/cluster",
                            details={"name": current["metadata"]["name"], "group": rt.group,
                                     "kind": rt.kind})
        if rt.has_generation and new.get("spec") != current.get("spec"):
            m["generation"] = old.get("generation", 1) + 1
        _validate(rt, new)
        return new

    def _commit(self, rt: ResourceType, new: Obj, dry_run: bool) -> Obj:
        if dry_run:
            return rt.output(new)
        written = self.store.replace(rt.storage, new)
        self.after_write()
        return rt.output(written)

    def _update_scale(self, rt: ResourceType, namespace: str, name: str, body: Any,
                      dry_run: bool) -> Obj:
        current = self.stored(rt, namespace, name)
        if not isinstance(body, dict):
            raise KubeError(400, "the body of the request must be a Scale object")
        rv = (body.get("metadata") or {}).get("resourceVersion")
        if rv and rv != current["metadata"]["resourceVersion"]:
            raise conflict(rt.plural, name, rt.group)
        replicas = (body.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise KubeError(422, f'Scale.autoscaling "{name}" is invalid: spec.replicas: '
                                 f"Invalid value: {replicas}: must be greater than or equal to 0")
        new = deep(current)
        new["spec"]["replicas"] = replicas
        if new["spec"] != current["spec"]:
            new["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        if dry_run:
            return scale_of(rt, new)
        self.store.replace(rt.storage, new)
        self.after_write()
        return scale_of(rt, self.stored(rt, namespace, name))


def scale_of(rt: ResourceType, obj: Obj) -> Obj:
    """The autoscaling/v1 Scale of a workload, as the /scale subresource serves it."""
    m = obj["metadata"]
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {k: m[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                       "creationTimestamp") if k in m},
        "spec": {"replicas": obj.get("spec", {}).get("replicas", 1)},
        "status": {"replicas": obj.get("status", {}).get("replicas", 0),
                   "selector": selectors.format_selector(obj.get("spec", {}).get("selector"))},
    }


def _validate(rt: ResourceType, obj: Obj) -> None:
    """The few validation rules the controller could trip over, as 422 Invalid."""
    name = obj["metadata"].get("name") or obj["metadata"].get("generateName", "")
    spec = obj.get("spec") or {}

    def invalid(field: str, value: object, why: str) -> KubeError:
        qualified = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
        return KubeError(422, f'{qualified} "{name}" is invalid: {field}: Invalid value: '
                              f"{json.dumps(value)}: {why}",
                         details={"name": name, "group": rt.group, "kind": rt.kind})

    if rt.kind in _WORKLOAD_KINDS:
        replicas = spec.get("replicas", 1)
        if not isinstance(replicas, int) or replicas < 0:
            raise invalid("spec.replicas", replicas, "must be greater than or equal to 0")
        reqs = selectors.selector_from_dict(spec.get("selector"))
        if not reqs:
            raise invalid("spec.selector", spec.get("selector"), "empty selector is invalid")
        template_labels = (spec.get("template", {}).get("metadata") or {}).get("labels") or {}
        if not selectors.matches_labels(reqs, template_labels):
            raise invalid("spec.template.metadata.labels", template_labels,
                          "`selector` does not match template `labels`")
    if rt.kind == "Pod" and not spec.get("containers"):
        raise invalid("spec.containers", [], "Required value")


def _sort_key(obj: Obj) -> str:
    m = obj["metadata"]
    return f"{m.get('namespace', '')}/{m['name']}"


def _encode_continue(key: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"v": "fake.v1", "start": key}).encode()).decode()


def _decode_continue(token: str) -> str:
    try:
        start = json.loads(base64.urlsafe_b64decode(token.encode()))["start"]
    except (ValueError, KeyError, TypeError) as e:
        raise KubeError(400, f"continue key is not valid: {e}") from e
    assert isinstance(start, str)
    return start

