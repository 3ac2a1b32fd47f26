"""The controller assembled for local workloads: ``autoscaler run --local`` and the demo.

The same ``Controller``, ``Drainer`` and ``Reaper`` as in Kubernetes; only the target
(``LocalTarget``) and the inventory (``LocalInventory`` instead of the watch) differ.
On stop, the loop is cancelled first (a drain in progress puts its victims back to
work), then every replica is stopped — SIGTERM, so each sidecar drains and pushes back
what it holds — and awaited: no process outlives the command.

A controller that dies without stopping (SIGKILL, OOM) takes its replicas along: each
leader gets SIGTERM from the kernel (``targets.local.proc.parent_death_signal``, Linux).
At start, ``LocalRun`` holds the run lock of its workloads (a second controller for the
same ones is refused), stops the orphans a dead predecessor left, and names its replicas
with a fresh run id, so no consumer id of this start was used by an earlier one
(``targets.local.orphans``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import shutil
import string
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry

from autoscaler.controller import Controller, DurabilityWatch, MemoryWatch
from autoscaler.drain import Drainer, Reaper
from autoscaler.errors import InputError
from autoscaler.logs import log_event
from autoscaler.metrics import ControllerMetrics, start_http_server
from autoscaler.sources import SourcePool
from autoscaler.targets.local.file import LocalWorkload, load_local_file
from autoscaler.targets.local.orphans import RunLock, run_key, stop_orphans
from autoscaler.targets.local.target import LocalInventory

logger = logging.getLogger(__name__)


class LocalRun:
    """Controller + local inventory + metrics server; ``start`` then ``aclose``."""

    def __init__(
        self,
        workloads: list[LocalWorkload],
        *,
        redis_url: str | None,
        dry_run: bool = False,
        log_dir: Path | None = None,
        grace_period_s: float = 30.0,
        reap_interval_s: float = 5.0,
    ) -> None:
        self.registry = CollectorRegistry()
        self.metrics = ControllerMetrics(self.registry)
        # One process, no election: it is the leader (else the NoLeader alert would fire).
        self.metrics.leader.set(1)
        self.pool = SourcePool(redis_url=redis_url)
        self.grace_period_s = grace_period_s
        self.run_key = run_key((w.name, w.queue, _server(w, redis_url)) for w in workloads)
        self.run_id = new_run_id()
        self._lock = RunLock(self.run_key)
        self.inventory = LocalInventory(
            workloads,
            redis_url=redis_url,
            log_dir=log_dir,
            grace_period_s=grace_period_s,
            run_id=self.run_id,
            owner=self.run_key,
        )
        self.controller = Controller(
            sources=self.pool,
            target_factory=self.inventory.target_for,
            metrics=self.metrics,
            drainer=Drainer(self.pool.redis_client, self.metrics),
            reaper=Reaper(self.pool.redis_client, self.metrics),
            reap_interval_s=reap_interval_s,
            memory=MemoryWatch(self.pool.redis_client, self.metrics),
            durability=DurabilityWatch(self.pool.redis_client, self.metrics),
            dry_run=dry_run,
        )
        self.task: asyncio.Task[None] | None = None
        self._http: web.AppRunner | None = None

    async def start(self, metrics_port: int = 0, metrics_host: str = "0.0.0.0") -> None:
        """Hold the run lock and stop orphans (``InputError`` if another controller runs
        these workloads), serve /metrics (port 0: not at all), start the replicas, then the
        loop."""
        self._lock.acquire()
        stopped = await stop_orphans(self.run_key, self.grace_period_s)
        if stopped:
            log_event(logger, "orphan replicas stopped", replicas=",".join(stopped),
                      reason="left running by a controller that died")  # fmt: skip
        if metrics_port:
            try:
                self._http = await start_http_server(self.registry, metrics_port, host=metrics_host)
            except OSError as e:
                raise InputError(f"--metrics-port: cannot listen on {metrics_port}: {e}") from e
        await self.inventory.start(self.controller.apply)
        self.task = asyncio.create_task(self.controller.run(), name="controller")

    async def wait(self, stop: asyncio.Event) -> None:
        """Until ``stop`` is set; raises if the loop itself ended with an error."""
        assert self.task is not None
        waiter = asyncio.create_task(stop.wait(), name="stop-wait")
        try:
            await asyncio.wait({waiter, self.task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            await asyncio.gather(waiter, return_exceptions=True)
        if self.task.done():
            self.task.result()  # the loop never ends by itself: surface why it did

    async def aclose(self) -> None:
        """Loop first (drains are called off), then the replicas, then the Redis pools."""
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        try:
            await self.inventory.aclose()
        finally:
            self._lock.release()  # after the replicas: a successor finds no orphan of ours
            await self.pool.aclose()
            if self._http is not None:
                await self._http.cleanup()


def _server(w: LocalWorkload, redis_url: str | None) -> str:
    """The Redis URL of the workload's queue, as ``LocalTarget`` resolves it."""
    triggers = w.spec.redis_triggers
    return (triggers[0].redis_url if triggers else None) or redis_url or ""


def new_run_id() -> str:
    """Four lowercase letters or digits: this start's part of its replica ids."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(4))


def check_urls(workloads: list[LocalWorkload], redis_url: str | None) -> None:
    """Every Redis trigger needs a server: its own redis-url or ``--redis-url``."""
    for w in workloads:
        if redis_url is None and any(t.redis_url is None for t in w.spec.queue_triggers):
            raise InputError(
                f"{w.where}: key redis-url: missing, and --redis-url is not set (workload {w.name})"
            )


def check_commands(workloads: list[LocalWorkload]) -> None:
    """Every command must start a program that exists: a replica that cannot start would
    otherwise be retried for ever, each attempt one warning in the log."""
    for w in workloads:
        program = w.command[0]
        if "{" in program:
            continue  # a placeholder: known only per replica
        found = shutil.which(program) if os.sep not in program else program
        if found is None or not (os.path.isfile(found) and os.access(found, os.X_OK)):
            where = "is not on PATH" if os.sep not in program else "is not an executable file"
            raise InputError(f"{w.where}: key command: {program!r} {where} (workload {w.name})")


async def run_local(
    path: str, *, redis_url: str | None, metrics_port: int, dry_run: bool, stop: asyncio.Event
) -> int:
    """``autoscaler run --local FILE.yaml`` until ``stop`` is set; the exit code.

    Raises ``InputError`` (exit 2) for a bad file, naming file, line and key. With
    ``dry_run`` the replicas start at their initial count and are never changed.
    ``metrics_port`` 0 serves no /metrics.
    """
    workloads = load_local_file(path)
    check_urls(workloads, redis_url)
    check_commands(workloads)
    run = LocalRun(workloads, redis_url=redis_url, dry_run=dry_run)
    log_event(
        logger,
        "local run",
        file=path,
        workloads=",".join(w.name for w in workloads),
        dry_run=dry_run,
    )
    try:
        await run.start(metrics_port)
        await run.wait(stop)
    finally:
        await run.aclose()
    return 0
