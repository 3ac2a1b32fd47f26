"""``autoscaler run``: the controller, against a cluster or (``--local``) local processes.

The only wiring of the cluster controller (``--local`` is ``autoscaler.app.local``). It
assembles the parts — Kubernetes client, inventory watch, leader election,
metric sources, drain protocol, reaper, metrics server — and owns their tasks: SIGTERM or
Ctrl-C cancels them all, the drains in flight restore their victims, the Lease is
released so the standby takes over at once, and the process exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import logging
import os
import signal
from collections.abc import Coroutine
from typing import Any

from prometheus_client import CollectorRegistry

from autoscaler import argtypes, logs
from autoscaler.controller import Controller, DurabilityWatch, MemoryWatch
from autoscaler.drain import Drainer, Reaper
from autoscaler.errors import AutoscalerError, InputError
from autoscaler.logs import log_event
from autoscaler.metrics import ControllerMetrics, start_http_server
from autoscaler.sources import SourcePool
from autoscaler.workload import WorkloadRef

from .local import run_local

logger = logging.getLogger(__name__)

SHUTDOWN_REPORT_S = 5.0  # a shutdown slower than this logs the tasks it waits for
# Events still queued at a stop are written for at most this long (inside the pod's 30 s
# grace period, beside a drain's hand-back): a scale's Event is not repeated by a successor
EVENT_FLUSH_S = 5.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the controller (kubeconfig, in-cluster, or --local FILE)",
        description="Watch annotated workloads, size them from their queues, drain before "
        "every scale-down.",
    )
    parser.add_argument(
        "--kubeconfig",
        help="kubeconfig file (default: $KUBECONFIG, else in-cluster, else ~/.kube/config)",
    )
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        metavar="NS",
        help="watch only this namespace (repeatable; default: all)",
    )
    parser.add_argument(
        "--local",
        metavar="FILE.yaml",
        help="scale local processes described in FILE instead of a cluster",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL"),
        help="Redis for workloads without redis-url (default: $REDIS_URL); "
        "credentials from REDIS_USERNAME / REDIS_PASSWORD(_FILE)",
    )
    parser.add_argument(
        "--prometheus-url",
        default=os.environ.get("PROMETHEUS_URL"),
        help="Prometheus for workloads without prometheus-url",
    )
    parser.add_argument(
        "--metrics-port",
        type=argtypes.port,
        default=8080,
        help="port of /metrics, /healthz, /readyz (0: off; default 8080)",
    )
    parser.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="elect a leader on a Lease (default: on)",
    )
    parser.add_argument("--lease-namespace", help="namespace of the Lease (default: the pod's)")
    for flag, default_s, meaning in (
        ("--lease-duration", 15.0, "how long a Lease holds without renewal"),
        ("--renew-deadline", 10.0, "the leader steps down if it cannot renew within this"),
        ("--retry-period", 2.0, "how often to try to acquire or renew"),
    ):
        parser.add_argument(
            flag,
            type=argtypes.positive_float,
            default=default_s,
            metavar="SECONDS",
            help=f"{meaning} (default {default_s:g})",
        )
    parser.add_argument("--dry-run", action="store_true", help="decide and log, write nothing")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")
    parser.add_argument(
        "--log-level", type=argtypes.log_level, default="INFO",
        help="DEBUG, INFO, WARNING or ERROR (default INFO)",
    )  # fmt: skip
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    logs.configure(args.log_format, args.log_level)
    return asyncio.run(_main(args))


async def _main(args: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.local:
        code: int = await run_local(
            args.local,
            redis_url=args.redis_url,
            metrics_port=args.metrics_port,
            dry_run=args.dry_run,
            stop=stop,
        )
        return code
    return await run_cluster(args, stop)


async def run_cluster(args: argparse.Namespace, stop: asyncio.Event) -> int:
    """The cluster controller until ``stop`` is set; exit code 0 on a clean stop."""
    # Imported here: `autoscaler --help` and `run --local` need none of the Kubernetes
    # rooms (their import is the start's CPU: docs/performance.md, goal 6).
    from autoscaler.kube import (
        KubeClient,
        LeaderElector,
        LeaderSettings,
        WorkloadWatcher,
        default_namespace,
    )
    from autoscaler.kube.events import EventQueue
    from autoscaler.kube.secrets import read_secret
    from autoscaler.targets.kubernetes import KubeTarget

    registry = CollectorRegistry()
    metrics = ControllerMetrics(registry)
    try:
        kube = await KubeClient.connect(args.kubeconfig, metrics=metrics)
    except AutoscalerError as e:
        raise InputError(str(e)) from e
    # a workload's redis-auth-secret: one `get` in its namespace (kube.secrets)
    sources = SourcePool(redis_url=args.redis_url, prometheus_url=args.prometheus_url,
                         secrets=functools.partial(read_secret, kube))  # fmt: skip
    elector = None
    if args.leader_elect:
        try:
            settings = LeaderSettings(
                namespace=args.lease_namespace or default_namespace(),
                lease_duration_s=args.lease_duration,
                renew_deadline_s=args.renew_deadline,
                retry_period_s=args.retry_period,
            )
        except ValueError as e:
            raise InputError(f"--lease-duration/--renew-deadline/--retry-period: {e}") from e
        elector = LeaderElector(kube, settings, metrics=metrics)
    watcher: WorkloadWatcher | None = None
    events = EventQueue()  # every workload's Events, written one at a time, behind scales
    controller = Controller(
        sources=sources,
        target_factory=lambda ref: KubeTarget(
            kube, ref, last_status=watcher.last_status(ref) if watcher else None, events=events
        ),
        metrics=metrics,
        drainer=Drainer(sources.redis_client, metrics),
        reaper=Reaper(sources.redis_client, metrics),
        memory=MemoryWatch(sources.redis_client, metrics),
        durability=DurabilityWatch(sources.redis_client, metrics),
        dry_run=args.dry_run,
        is_leader=elector.is_leader.is_set if elector else lambda: True,
    )

    def observe_status(ref: WorkloadRef, text: str | None) -> None:
        w = controller.workloads.get(ref)
        if w is not None and isinstance(w.target, KubeTarget):
            w.target.observe_status(text)

    watcher = WorkloadWatcher(
        kube, controller.apply, namespaces=args.namespace, on_status=observe_status
    )
    if elector is None:
        metrics.leader.set(1)
    runner = None
    if args.metrics_port:
        # a scrape never waits for a render: it reads the last one (as of the previous
        # scrape) while the next renders in a thread (docs/performance.md, /metrics)
        try:
            runner = await start_http_server(
                registry, args.metrics_port, max_age_s=1.0, render=metrics.render, serve_stale=True
            )
        except OSError as e:  # a busy port is a bad flag: one line, exit 2 (as --local)
            await sources.aclose()
            await kube.close()
            raise InputError(f"--metrics-port: cannot listen on {args.metrics_port}: {e}") from e
    jobs: list[Coroutine[Any, Any, None]] = [
        watcher.run(),
        controller.run(synced=watcher.synced),
        events.run(),
    ]
    if elector is not None:
        jobs.append(elector.run())
    log_event(
        logger,
        "controller started",
        namespaces=",".join(args.namespace) or "*",
        leader_elect=args.leader_elect,
        dry_run=args.dry_run,
    )
    try:
        await run_until(stop, jobs)
    finally:
        await events.flush(EVENT_FLUSH_S)
        if runner is not None:
            await runner.cleanup()
        await sources.aclose()
        await kube.close()
    log_event(logger, "controller stopped")
    return 0


async def run_until(stop: asyncio.Event, jobs: list[Coroutine[Any, Any, None]]) -> None:
    """Run ``jobs`` until ``stop`` is set or one of them fails; cancel the rest, in order."""
    tasks = [asyncio.create_task(job) for job in jobs]
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in [stopper, *reversed(tasks)]:
            task.cancel()
        _, stuck = await asyncio.wait([*tasks, stopper], timeout=SHUTDOWN_REPORT_S)
        for task in stuck:  # name what holds the shutdown up, then keep waiting
            log_event(
                logger,
                "shutdown waiting",
                logging.WARNING,
                task=task.get_name(),
                stack=" | ".join(repr(f) for f in task.get_stack()),
            )
        results = await asyncio.gather(*tasks, stopper, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            with contextlib.suppress(Exception):
                log_event(logger, "task failed", logging.ERROR, error=repr(result))
            raise result
