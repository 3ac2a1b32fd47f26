"""Kubernetes Events on one workload, written the way client-go's recorder writes them.

An Event names its ``involvedObject`` (apiVersion, kind, namespace, name and, once known,
the uid: without it the Event still shows by name). A repeat of the same type, reason
and message bumps ``count`` and ``lastTimestamp`` of the Event already written instead
of creating one more object, so a repeating warning costs one small PATCH. The bump is
conditional on the Event's resourceVersion; on 409 it re-reads and tries again. An Event
that expired meanwhile (they live about an hour) is written anew.

What a bump needs of a written Event is remembered, not the Event: its name,
resourceVersion and count, for the last ``max_remembered`` (type, reason, message) of the
workload. The API server's answer (metadata, involvedObject, source, timestamps) is a
few KB of Python objects, and at 10,000 busy workloads each scale writes an Event with a
new message (it carries the readings): 32 answers per workload kept filling over hours
towards ~1 GB, against the deploy's 512Mi (docs/performance.md, goal 5).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable

from autoscaler.errors import KubeConflictError, KubeError, KubeNotFoundError
from autoscaler.logs import log_event
from autoscaler.workload import WorkloadRef

from . import operations
from .client import KubeClient, Obj

logger = logging.getLogger(__name__)

COMPONENT = "queue-autoscaler"
MAX_EVENT_MESSAGE = 1024  # the events.k8s.io limit; core/v1 has none, kubectl wraps anyway
MAX_QUEUED_EVENTS = 1000  # client-go's event broadcaster queues as many (maxQueuedEvents)


class EventQueue:
    """Events to write, oldest first, one at a time by ``run`` — as client-go's event
    broadcaster: whoever records one goes on at once, and a full queue drops.

    Written each by a task of its own, Events waited at the client's rate limiter as
    parked coroutine chains (a few KB each; at 10,000 workloads thousands at once after
    a start, docs/performance.md goal 5), and a scale-up's or a drain's own Event held its action
    until written. Queued, one is a ``write`` callable (the target's bound method and its
    arguments). Their requests are background calls (``operations.create_event``):
    behind every scale and drain write. When ``max_queued`` are waiting, the oldest is
    dropped (newer ones tell the current state) and a warning logged (the first, then
    every 100th)."""

    def __init__(self, *, max_queued: int = MAX_QUEUED_EVENTS) -> None:
        self.max_queued = max_queued
        self._queued: deque[Callable[[], Awaitable[None]]] = deque()
        self._ready = asyncio.Event()
        self.dropped = 0

    @property
    def queued(self) -> int:
        return len(self._queued)

    def put(self, write: Callable[[], Awaitable[None]]) -> None:
        if len(self._queued) >= self.max_queued:
            self._queued.popleft()
            self.dropped += 1
            if self.dropped % 100 == 1:
                log_event(logger, "events dropped", logging.WARNING, dropped=self.dropped,
                          queued=len(self._queued))  # fmt: skip
        self._queued.append(write)
        self._ready.set()

    async def run(self) -> None:
        """Write the queued Events until cancelled; a failed one is logged and dropped."""
        while True:
            while not self._queued:
                self._ready.clear()
                await self._ready.wait()
            await self._write(self._queued.popleft())

    async def flush(self, timeout_s: float) -> None:
        """At a stop, after ``run`` is cancelled: write what is still queued (the last
        scale's Event, say: a successor would not repeat it) for at most ``timeout_s``;
        log how many were left unwritten."""
        try:
            async with asyncio.timeout(timeout_s):
                while self._queued:
                    await self._write(self._queued[0])  # cut by the timeout: still queued
                    self._queued.popleft()
        except TimeoutError:
            pass
        if self._queued:
            log_event(logger, "events not written at stop", logging.WARNING,
                      left=len(self._queued), timeout_s=timeout_s)  # fmt: skip

    async def _write(self, write: Callable[[], Awaitable[None]]) -> None:
        try:
            await write()
        except KubeError as e:
            log_event(logger, "event write failed", logging.WARNING, error=str(e))
        except Exception:  # a bug in one Event must not stop the others
            logger.exception("event write crashed")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class EventRecorder:
    """Records Events on one workload; ``uid`` answers the workload's uid when known."""

    def __init__(
        self,
        kube: KubeClient,
        ref: WorkloadRef,
        *,
        uid: Callable[[], Awaitable[str | None]],
        max_remembered: int = 8,
    ) -> None:
        self.kube = kube
        self.ref = ref
        self._uid = uid
        # (type, reason, message) → (name, resourceVersion, count) of the Event written
        # for it, newest last
        self._written: OrderedDict[tuple[str, str, str], tuple[str, str, int]] = OrderedDict()
        self._max_remembered = max_remembered

    async def record(self, reason: str, message: str, *, warning: bool = False) -> Obj:
        """Write (or bump) the Event; returns it as the API server answered."""
        kind = "Warning" if warning else "Normal"
        key = (kind, reason, message[:MAX_EVENT_MESSAGE])
        known = self._written.get(key)
        event: Obj | None = None
        if known is not None:
            try:
                event = await self._bump(known)
            except KubeNotFoundError:
                event = None  # expired: write a new one
        if event is None:
            event = await self._create(*key)
        self._written[key] = _remembered(event)
        self._written.move_to_end(key)
        while len(self._written) > self._max_remembered:
            self._written.popitem(last=False)
        return event

    async def _involved_object(self) -> Obj:
        ref = self.ref
        involved: Obj = {
            "apiVersion": operations.API_VERSIONS.get(ref.kind, "apps/v1"),
            "kind": ref.kind,
            "namespace": ref.namespace,
            "name": ref.name,
        }
        uid = await self._uid()
        if uid:
            involved["uid"] = uid
        return involved

    async def _create(self, kind: str, reason: str, message: str) -> Obj:
        now = _now()
        ref = self.ref
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

    async def _bump(self, known: tuple[str, str, int]) -> Obj:
        """count + 1 on the Event, conditional on its resourceVersion; on 409 re-read."""
        namespace, name = self.ref.namespace, known[0]

        async def write(current: Obj) -> Obj:
            patch = {
                "count": int(current.get("count") or 1) + 1,
                "lastTimestamp": _now(),
                "metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
            }
            return await operations.patch_event(self.kube, namespace, name, patch)

        async def read() -> Obj:
            return await operations.read_event(self.kube, namespace, name)

        last = {"count": known[2], "metadata": {"resourceVersion": known[1]}}
        try:
            return await write(last)  # from what we wrote last: usually no read needed
        except KubeConflictError:
            return await self.kube.read_modify_write(read, write)


def _remembered(event: Obj) -> tuple[str, str, int]:
    """What a later bump of ``event`` needs: name, resourceVersion, count."""
    meta = event.get("metadata") or {}
    return str(meta.get("name")), str(meta.get("resourceVersion")), int(event.get("count") or 1)
