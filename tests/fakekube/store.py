"""Object storage with one global resourceVersion, a bounded event history, and watchers.

Like etcd behind the API server: every write bumps a single counter, which becomes the
written object's ``metadata.resourceVersion``; each write is kept in a history of at most
``history_limit`` events, so that a watch can resume from any resourceVersion still in it.
Resuming from an older one fails with 410 Expired (``compact()`` forces that at once).
A write that changes nothing is a no-op: no new resourceVersion, no event.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.fakekube.model import (
    FakeClock,
    Ids,
    KubeError,
    Obj,
    StorageKey,
    deep,
    meta,
)
from tests.fakekube.resources import ResourceType

ObjKey = tuple[StorageKey, str, str]  # (storage, namespace, name)


@dataclass(frozen=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED
    storage: StorageKey
    namespace: str
    obj: Obj  # the object after the write (for DELETED: as deleted, with the new RV)
    prev: Obj | None  # before the write; selectors need both to turn MODIFIED into ADDED/DELETED
    rv: int


@dataclass(eq=False)
class Watcher:
    """One open watch: events of one storage (and namespace) are queued for its handler."""

    storage: StorageKey
    namespace: str | None
    queue: asyncio.Queue[WatchEvent | None] = field(default_factory=asyncio.Queue)

    def wants(self, event: WatchEvent) -> bool:
        return event.storage == self.storage and self.namespace in (None, event.namespace)


def expired(requested: int, oldest: int) -> KubeError:
    return KubeError(410, f"too old resource version: {requested} ({oldest})", reason="Expired")


class Store:
    def __init__(self, clock: FakeClock, ids: Ids, history_limit: int = 10_000) -> None:
        self.clock = clock
        self.ids = ids
        self.history_limit = history_limit
        self.rv = 0
        self.compacted_rv = 0  # every event with rv <= this one has been forgotten
        self.history: collections.deque[WatchEvent] = collections.deque()
        self.watchers: set[Watcher] = set()
        self.watchers_changed = asyncio.Event()
        self.listeners: list[Callable[[WatchEvent], None]] = []
        self._objects: dict[StorageKey, dict[tuple[str, str], Obj]] = collections.defaultdict(dict)
        self._children: dict[str, set[ObjKey]] = collections.defaultdict(set)

    # ---- reads (return the stored dicts: callers copy before handing them out) ----------

    def get(self, storage: StorageKey, namespace: str, name: str) -> Obj | None:
        return self._objects[storage].get((namespace, name))

    def items(self, storage: StorageKey, namespace: str | None = None) -> list[Obj]:
        objects = self._objects[storage]
        keys = sorted(k for k in objects if namespace is None or k[0] == namespace)
        return [objects[k] for k in keys]

    def children(self, owner_uid: str) -> list[ObjKey]:
        """Objects whose ownerReferences name ``owner_uid``, sorted."""
        return sorted(self._children.get(owner_uid, ()))

    # ---- writes ------------------------------------------------------------------------

    def create(self, rt: ResourceType, obj: Obj, namespace: str, *, dry_run: bool = False,
               stamp: str | None = None) -> Obj:
        """Store a new object; ``stamp`` is its creationTimestamp (default: tick the clock)."""
        obj = deep(obj)
        m = meta(obj)
        objects = self._objects[rt.storage]
        if not m.get("name"):
            prefix = m.get("generateName") or ""
            if not prefix:
                raise KubeError(422, "name or generateName is required", details=_details(rt))
            m["name"] = prefix + self.ids.suffix()
            while (namespace, m["name"]) in objects:
                m["name"] = prefix + self.ids.suffix()
        if (namespace, m["name"]) in objects:
            raise KubeError(409, f'{_qualified(rt)} "{m["name"]}" already exists',
                            reason="AlreadyExists", details=_details(rt, m["name"]))
        if rt.namespaced:
            m["namespace"] = namespace
        m["uid"] = self.ids.uid()
        m["creationTimestamp"] = stamp or self.clock.stamp()
        for transient in ("deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
            m.pop(transient, None)
        if rt.has_generation:
            m["generation"] = 1
        if dry_run:
            m["resourceVersion"] = str(self.rv)
            return obj
        self._write("ADDED", rt.storage, obj, None)
        return deep(obj)

    def replace(self, storage: StorageKey, obj: Obj) -> Obj:
        """Store a new version of an existing object (preconditions are the caller's job)."""
        obj = deep(obj)
        m = meta(obj)
        key = (m.get("namespace", ""), m["name"])
        prev = self._objects[storage][key]
        m["resourceVersion"] = prev["metadata"]["resourceVersion"]
        if obj == prev:
            return deep(prev)
        self._write("MODIFIED", storage, obj, prev)
        return deep(obj)

    def delete(self, storage: StorageKey, namespace: str, name: str) -> Obj:
        prev = self._objects[storage][(namespace, name)]
        obj = deep(prev)
        self._write("DELETED", storage, obj, prev)
        return deep(obj)

    def _write(self, kind: str, storage: StorageKey, obj: Obj, prev: Obj | None) -> None:
        self.rv += 1
        m = meta(obj)
        m["resourceVersion"] = str(self.rv)
        namespace = m.get("namespace", "")
        key = (namespace, m["name"])
        if kind == "DELETED":
            del self._objects[storage][key]
        else:
            self._objects[storage][key] = obj
        self._reindex((storage, *key), prev, None if kind == "DELETED" else obj)
        event = WatchEvent(kind, storage, namespace, deep(obj), prev and deep(prev), self.rv)
        self.history.append(event)
        self.trim()
        for watcher in self.watchers:
            if watcher.wants(event):
                watcher.queue.put_nowait(event)
        for listener in self.listeners:
            listener(event)

    def _reindex(self, key: ObjKey, prev: Obj | None, new: Obj | None) -> None:
        for obj, add in ((prev, False), (new, True)):
            for ref in (obj or {}).get("metadata", {}).get("ownerReferences") or []:
                if add:
                    self._children[ref["uid"]].add(key)
                else:
                    self._children[ref["uid"]].discard(key)

    # ---- history and watches -----------------------------------------------------------

    def trim(self) -> None:
        """Forget the oldest events beyond ``history_limit``."""
        while len(self.history) > self.history_limit:
            self.compacted_rv = self.history.popleft().rv

    def compact(self) -> None:
        """Forget all history, as etcd compaction does: older watches now get 410."""
        self.history.clear()
        self.compacted_rv = self.rv

    def events_since(self, rv: int, storage: StorageKey, namespace: str | None) -> list[WatchEvent]:
        """Events after ``rv``; raises 410 Expired when some were already forgotten."""
        if rv < self.compacted_rv:
            raise expired(rv, self.compacted_rv + 1)
        probe = Watcher(storage, namespace)
        return [e for e in self.history if e.rv > rv and probe.wants(e)]

    def watch(self, storage: StorageKey, namespace: str | None) -> Watcher:
        watcher = Watcher(storage, namespace)
        self.watchers.add(watcher)
        self.watchers_changed.set()
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)

    def bookmark(self) -> None:
        """Send a BOOKMARK at the current resourceVersion to watches that allow them."""
        for watcher in self.watchers:
            watcher.queue.put_nowait(WatchEvent("BOOKMARK", watcher.storage, "", {}, None, self.rv))

    def close_watchers(self) -> None:
        """End every open watch (each handler sees ``None`` and finishes its response)."""
        for watcher in self.watchers:
            watcher.queue.put_nowait(None)


def _qualified(rt: ResourceType) -> str:
    return f"{rt.plural}.{rt.group}" if rt.group else rt.plural


def _details(rt: ResourceType, name: str = "") -> Obj:
    return {"name": name, "group": rt.group, "kind": rt.plural}
