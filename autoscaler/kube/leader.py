"""Leader election on a ``coordination.k8s.io/v1`` Lease — client-go's algorithm, small.

Terms (client-go's): the *lease duration* is how long a standby waits, after it last saw
the Lease change, before it takes the Lease over; the *renew deadline* is how long the
leader keeps trying to renew before it steps down; the *retry period* is how often
everybody tries. Because renew deadline < lease duration, the old leader has stopped
before a standby can start: never two leaders at once. Expiry is judged on the local
monotonic clock from when a change was *observed*, never from the timestamps in the Lease,
so clock skew between nodes does not matter.

Lease calls skip the client's QPS limiter (they are one per retry period): a queue of
workload writes must never delay a renewal past the renew deadline. Writes are merge
patches carrying ``metadata.resourceVersion``, so a stale write is a 409 (someone else
moved first) and never overwrites another elector. A clean stop releases
the Lease (empty holder, ``leaseDurationSeconds: 1``) so a standby takes over within one
retry period instead of one lease duration.

``kubernetes.aio``'s bundled ``leaderelection`` is not used: its LeaseLock fails (it passes
``pretty=True`` where a string is expected; ``docs/keda-hpa-baseline.md``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math
import os
import random
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoscaler.errors import KubeConflictError, KubeError, KubeNotFoundError
from autoscaler.logs import log_event
from autoscaler.metrics import ControllerMetrics

from .client import MERGE_PATCH, KubeClient, Obj

logger = logging.getLogger(__name__)

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def default_identity() -> str:
    """``POD_NAME`` (the Downward API), else hostname plus a random suffix."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def default_namespace() -> str:
    """``POD_NAMESPACE``, else the service account's namespace, else ``default``."""
    if os.environ.get("POD_NAMESPACE"):
        return os.environ["POD_NAMESPACE"]
    try:
        return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
    except OSError:
        return "default"


@dataclass(frozen=True)
class LeaderSettings:
    """``lease_duration_s`` (15 s; written to the Lease rounded up to whole seconds, as its
    ``leaseDurationSeconds`` is an integer), ``renew_deadline_s`` (10 s, must be less),
    ``retry_period_s`` (2 s). The Lease is ``namespace/lease_name``."""

    lease_name: str = "queue-autoscaler-leader"
    namespace: str = "default"
    lease_duration_s: float = 15.0
    renew_deadline_s: float = 10.0
    retry_period_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_period_s < self.renew_deadline_s < self.lease_duration_s:
            raise ValueError("need 0 < retry period < renew deadline < lease duration")


def _micro_time(now: dt.datetime) -> str:
    """RFC 3339 with exactly six fraction digits, as ``MicroTime`` wants."""
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class LeaderElector:
    """Run ``run()`` as a task; ``is_leader`` is set exactly while this process leads."""

    def __init__(
        self,
        kube: KubeClient,
        settings: LeaderSettings | None = None,
        *,
        identity: str | None = None,
        metrics: ControllerMetrics | None = None,
    ) -> None:
        self.kube = kube
        self.settings = settings or LeaderSettings()
        self.identity = identity or default_identity()
        self.metrics = metrics
        self.is_leader = asyncio.Event()
        self.rng = random.Random()
        self._lease: Obj | None = None  # as last read or written
        self._observed: tuple[Any, ...] | None = None
        self._observed_at = 0.0
        self._renewed_at = 0.0  # loop time when the last successful write was sent

    async def run(self, *, release_on_exit: bool = True) -> None:
        """Acquire, lead, lose, repeat — until cancelled; then step down at once and, if
        ``release_on_exit`` (a clean shutdown), release the Lease for the standby."""
        try:
            while True:
                await self._acquire()
                self._set_leader(True)
                await self._lead()
                self._set_leader(False)
        finally:
            was_leader = self.is_leader.is_set()
            self._set_leader(False)
            if was_leader and release_on_exit:
                await self._release()

    def _set_leader(self, leading: bool) -> None:
        if leading == self.is_leader.is_set():
            return
        if leading:
            self.is_leader.set()
        else:
            self.is_leader.clear()
        if self.metrics is not None:
            self.metrics.leader.set(1 if leading else 0)
        s = self.settings
        log_event(
            logger,
            "became leader" if leading else "stopped leading",
            logging.INFO if leading else logging.WARNING,
            lease=f"{s.namespace}/{s.lease_name}",
            identity=self.identity,
        )

    # ---- the loops --------------------------------------------------------------------

    async def _acquire(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                if await self._try_acquire_or_renew():
                    self._renewed_at = started
                    return
            except KubeError as e:
                log_event(logger, "lease acquire failed", logging.WARNING, error=str(e))
            # Jittered like client-go (up to +20%), so standbys do not move in lockstep.
            await asyncio.sleep(self.settings.retry_period_s * (1 + 0.2 * self.rng.random()))

    async def _lead(self) -> None:
        """Renew every retry period; return when the Lease is lost or the deadline passes."""
        s = self.settings
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(s.retry_period_s)
            try:
                async with asyncio.timeout_at(self._renewed_at + s.renew_deadline_s):
                    while True:
                        started = loop.time()
                        try:
                            if not await self._renew():
                                return  # somebody else holds it now
                            self._renewed_at = started
                            break
                        except KubeError as e:
                            log_event(logger, "lease renew failed", logging.WARNING, error=str(e))
                            await asyncio.sleep(s.retry_period_s)
            except TimeoutError:
                log_event(
                    logger,
                    "lease renew deadline passed",
                    logging.WARNING,
                    deadline_s=s.renew_deadline_s,
                )
                return

    # ---- one attempt ------------------------------------------------------------------

    async def _renew(self) -> bool:
        """Renew from the cached Lease (one request); on 409 re-read and decide again."""
        if self._lease is None:
            return await self._try_acquire_or_renew()
        try:
            self._lease = await self._patch(self._lease, acquiring=False)
            return True
        except (KubeConflictError, KubeNotFoundError):
            return await self._try_acquire_or_renew()

    async def _try_acquire_or_renew(self) -> bool:
        s = self.settings
        kube = self.kube
        try:
            lease = await kube.call(
                kube.coordination.read_namespaced_lease, s.lease_name, s.namespace, throttled=False
            )
        except KubeNotFoundError:
            return await self._create()
        self._lease = lease
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity") or ""
        if holder and holder != self.identity and not self._expired(spec):
            return False
        try:
            self._lease = await self._patch(lease, acquiring=holder != self.identity)
        except KubeConflictError:
            return False  # another elector wrote first: it leads, or we try again
        if holder != self.identity:
            log_event(logger, "lease acquired", identity=self.identity, previous=holder or None)
        return True

    def _expired(self, spec: Obj) -> bool:
        now = asyncio.get_running_loop().time()
        key = (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseDurationSeconds"))
        if key != self._observed:
            self._observed, self._observed_at = key, now
        duration = spec.get("leaseDurationSeconds") or self.settings.lease_duration_s
        return now >= self._observed_at + float(duration)

    async def _create(self) -> bool:
        s = self.settings
        now = _micro_time(_utcnow())
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": s.lease_name, "namespace": s.namespace},
            "spec": {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": math.ceil(s.lease_duration_s),
                "acquireTime": now,
                "renewTime": now,
                "leaseTransitions": 0,
            },
        }
        kube = self.kube
        try:
            self._lease = await kube.call(
                kube.coordination.create_namespaced_lease, s.namespace, body, throttled=False
            )
        except KubeConflictError:
            return False  # created by another elector in the meantime
        log_event(logger, "lease created", identity=self.identity)
        return True

    async def _patch(self, lease: Obj, *, acquiring: bool) -> Obj:
        s = self.settings
        now = _micro_time(_utcnow())
        spec: Obj = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": math.ceil(s.lease_duration_s),
            "renewTime": now,
        }
        if acquiring:
            spec["acquireTime"] = now
            spec["leaseTransitions"] = (
                int((lease.get("spec") or {}).get("leaseTransitions") or 0) + 1
            )
        return await self._write(lease, spec)

    async def _write(self, lease: Obj, spec: Obj) -> Obj:
        version = (lease.get("metadata") or {}).get("resourceVersion")
        body = {"metadata": {"resourceVersion": version}, "spec": spec}
        kube, s = self.kube, self.settings
        return await kube.call(
            kube.coordination.patch_namespaced_lease,
            s.lease_name,
            s.namespace,
            body,
            _content_type=MERGE_PATCH,
            throttled=False,
        )

    async def _release(self) -> None:
        """Hand the Lease back: empty holder, 1 s duration; bounded by the renew deadline."""
        if self._lease is None:
            return
        spec = {
            "holderIdentity": "",
            "leaseDurationSeconds": 1,
            "renewTime": _micro_time(_utcnow()),
        }
        try:
            async with asyncio.timeout(self.settings.renew_deadline_s):
                self._lease = await self._write(self._lease, spec)
            log_event(logger, "lease released", identity=self.identity)
        except (KubeError, TimeoutError) as e:
            log_event(logger, "lease release failed", logging.WARNING, error=str(e))
