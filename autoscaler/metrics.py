"""Prometheus metrics of the controller, and the HTTP server for /metrics and probes.

Every series takes an injected ``CollectorRegistry`` (tests read it with
``get_sample_value``). Label values are bounded: ``namespace``/``workload`` (one per
annotated workload), ``trigger`` (one or two per workload), ``reason``/``direction``/
``stage`` (fixed sets: ``Reason``, ``DIRECTIONS``, ``DRAIN_STAGES``), ``queue`` (the
workloads' lists), ``verb``/``code`` (Kubernetes verbs, HTTP statuses or ``error``).
Never a message id or a pod name. The Grafana dashboards in ``grafana/`` and the alert
rules in ``deploy/monitoring/`` use exactly these names; ``docs/metrics.md`` is generated
from this registry (``python -m grafana.metrics_doc``), and a test keeps it current.

``track`` creates a workload's counters at zero as soon as its spec parses, so that
``increase()`` sees their first increment and a dashboard shows 0, not "no data".
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from enum import StrEnum
from itertools import chain
from typing import TYPE_CHECKING, Protocol

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric

from autoscaler import NAME, __version__
from autoscaler.exposition import BoundGauge, Exposition, Renderer
from autoscaler.policy import Reason, RedisStreamTrigger, RedisTrigger

if TYPE_CHECKING:
    from autoscaler.policy import ScalingSpec

logger = logging.getLogger(__name__)

# No ``<counter>_created`` samples: no dashboard or alert reads them, and at 10,000
# workloads they were a third of every scrape (11 of ~33 lines a workload).
disable_created_metrics()  # type: ignore[no-untyped-call]
LAG_PROBE_S = 0.1  # how often the event loop's lag is sampled
LAG_WINDOW_S = 10.0  # the lag gauge shows the longest stall over this long

METRIC_PREFIX = NAME.replace("-", "_") + "_"
WORKLOAD = ("namespace", "workload")
TRIGGER = (*WORKLOAD, "trigger")
DIRECTIONS = ("up", "down")


class DrainStage(StrEnum):
    """The drain funnel, and the ``stage`` label of ``drains_total``: every ``REQUESTED``
    drain ends in exactly one outcome (the next four). ``RESTORE_RETRIED`` also counts the
    drains whose victims took more than one attempt to put back to work."""

    REQUESTED = "requested"
    ACKNOWLEDGED = "acknowledged"  # every victim drained: scaled down
    TIMED_OUT = "timed_out"  # drain-timeout passed: scaled down anyway
    CANCELLED = "cancelled"  # load rose, or not the victims Kubernetes removes, or scaled
    # by someone else: victims back to work, no scale-down
    ABORTED = "aborted"  # an error, a stop or lost leadership: victims back to work
    RESTORE_RETRIED = "restore_retried"


DRAIN_STAGES = tuple(DrainStage)
DURABILITY_RISKS = ("no_persistence", "eviction")  # redis_durability_risk{risk}


class Observed(Protocol):
    """What the per-workload gauges read, at scrape time, from one workload the loop
    tracks (``controller.workload.Workload``). NaN: not known (no decision yet, or the
    trigger's last read failed: a gap, never a stale or made-up value)."""

    def desired(self) -> float: ...

    def current_replicas(self) -> float: ...

    def fallback(self) -> float: ...

    def reading(self, index: int, field: str) -> float:
        """``field`` (``value``, ``backlog``, ``in_flight``) of trigger ``index``'s reading."""
        ...


class BatchedCounter(Counter):
    """A labelled ``Counter`` that also takes +1 on many of its children in one call.

    ``inc_each`` only queues the children (O(1)); the increments are added, each child
    once with its total, when the metric is next collected (a scrape, a test's
    ``get_sample_value``), or once more than ``MAX_PENDING`` are queued. What a scrape
    reads is therefore exactly what calling ``inc()`` on each would have given. The loop
    counts its steady decisions this way: 10,000 ``inc()`` calls cost ~5-10 ms a cycle.
    """

    MAX_PENDING = 1_000_000  # children queued (8 bytes each) before applying anyway

    _pending: list[Sequence[Counter]]
    _pending_count = 0
    _pending_lock: threading.Lock

    def inc_each(self, children: Sequence[Counter]) -> None:
        """One more on each of ``children`` (children of this counter, from ``labels``)."""
        if not children:
            return
        if "_pending_lock" not in self.__dict__:  # set up lazily: labels() builds children
            self._pending_lock, self._pending = threading.Lock(), []
        with self._pending_lock:
            self._pending.append(children)
            self._pending_count += len(children)
            full = self._pending_count > self.MAX_PENDING
        if full:
            self._apply_pending()

    def _apply_pending(self) -> None:
        if "_pending_lock" not in self.__dict__:
            return
        with self._pending_lock:
            pending, self._pending, self._pending_count = self._pending, [], 0
        for child, n in collections.Counter(chain.from_iterable(pending)).items():
            child.inc(n)

    def collect(self) -> Iterable[Metric]:
        self._apply_pending()
        return super().collect()


class ControllerMetrics:
    """The controller's series. One instance per process, on an injected registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._triggers: dict[tuple[str, str], set[str]] = {}  # trigger names per workload
        self._renderer: Renderer | None = None
        p = METRIC_PREFIX
        self.backlog = BoundGauge(
            p + "backlog", "Queued messages per trigger.", TRIGGER, registry=registry
        )
        self.in_flight = BoundGauge(
            p + "in_flight", "Messages held by consumers per trigger.", TRIGGER, registry=registry
        )
        self.metric_value = BoundGauge(
            p + "metric_value", "Load value a trigger sizes on.", TRIGGER, registry=registry
        )
        self.desired_replicas = BoundGauge(
            p + "desired_replicas",
            "Replicas the last decision asked for.",
            WORKLOAD,
            registry=registry,
        )
        self.current_replicas = BoundGauge(
            p + "current_replicas",
            "Replicas the workload had at the last decision.",
            WORKLOAD,
            registry=registry,
        )
        self.decisions = BatchedCounter(
            p + "decisions", "Decisions by reason.", (*WORKLOAD, "reason"), registry=registry
        )
        self.scale_events = Counter(
            p + "scale_events",
            "Replica changes written, by direction.",
            (*WORKLOAD, "direction"),
            registry=registry,
        )
        self.source_errors = Counter(
            p + "source_errors", "Failed trigger reads.", TRIGGER, registry=registry
        )
        self.fallback_active = BoundGauge(
            p + "fallback_active",
            "1 while fallback-replicas is in force.",
            WORKLOAD,
            registry=registry,
        )
        self.redis_memory_ratio = Gauge(
            p + "redis_memory_ratio",
            "used_memory/maxmemory of the workload's Redis, for redis-memory-high watermarks "
            "(read every few cycles).",
            WORKLOAD,
            registry=registry,
        )
        self.redis_maxmemory_unset = Gauge(
            p + "redis_maxmemory_unset",
            "1 while the workload sets redis-memory-high and its Redis has maxmemory 0 (no "
            "ratio: the watermarks cannot fire).",
            WORKLOAD,
            registry=registry,
        )
        self.redis_durability_risk = Gauge(
            p + "redis_durability_risk",
            "1 while the workload's Redis can lose messages, by risk: no_persistence "
            "(neither AOF nor RDB) or eviction (an allkeys-*/volatile-* maxmemory-policy).",
            (*WORKLOAD, "risk"),
            registry=registry,
        )
        self.min_replicas = Gauge(
            p + "min_replicas", "The min-replicas annotation.", WORKLOAD, registry=registry
        )
        self.max_replicas = Gauge(
            p + "max_replicas", "The max-replicas annotation.", WORKLOAD, registry=registry
        )
        self.spec_valid = Gauge(
            p + "spec_valid",
            "1 when the workload's annotations parse, else 0.",
            WORKLOAD,
            registry=registry,
        )
        self.drains = Counter(
            p + "drains",
            "Drain funnel: requested, then one of acknowledged, timed_out (scaled down "
            "anyway), cancelled (load rose, pods Kubernetes would remove changed, or "
            "someone else scaled) or aborted (error or controller stop).",
            (*WORKLOAD, "stage"),
            registry=registry,
        )
        self.undrained_removals = Counter(
            p + "undrained_pod_removals",
            "Pods the ReplicaSet removed that were not the drained ones.",
            WORKLOAD,
            registry=registry,
        )
        self.reaped_messages = Counter(
            p + "reaped_messages",
            "Messages returned to the queue from dead consumers.",
            ("queue",),
            registry=registry,
        )
        self.dead_lettered = Counter(
            p + "dead_lettered",
            "Messages the reaper moved to the dead-letter list.",
            ("queue",),
            registry=registry,
        )
        self.loop_duration = Histogram(
            p + "loop_duration_seconds",
            "Duration of one scheduler cycle.",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.kube_requests = Counter(
            p + "kube_requests",
            "Kubernetes API calls by verb and status code.",
            ("verb", "code"),
            registry=registry,
        )
        self.leader = Gauge(p + "leader", "1 while this process leads.", registry=registry)
        self.event_loop_lag = Gauge(
            p + "event_loop_lag_seconds",
            f"Longest event-loop stall (a timer firing late) over the last {LAG_WINDOW_S:g} s.",
            registry=registry,
        )
        self.workloads = Gauge(
            p + "workloads", "Annotated workloads known to the controller.", registry=registry
        )
        self.build = Info(p + "build", "Build information.", registry=registry)
        self.build.info({"version": __version__})

    def render(self) -> bytes:
        """This registry's /metrics body, fast (``autoscaler.exposition.Renderer``): every
        series here is one of these attributes. Called from one thread at a time."""
        if self._renderer is None:
            wrappers = (v for v in vars(self).values() if isinstance(v, MetricWrapperBase))
            self._renderer = Renderer(wrappers)
        return self._renderer()

    def track(
        self, namespace: str, workload: str, spec: ScalingSpec, observed: Observed | None = None
    ) -> None:
        """A workload's spec (re)parsed: set its bounds, create its counters at zero, and
        bind its gauges to ``observed``.

        Bound, not set: each of these gauges calls ``observed`` when scraped, so a cycle
        in which 10,000 workloads move sets no gauge at all (``labels().set()`` was ~45%
        of such a cycle's CPU: bench/bench_cycle.py --moving, docs/performance.md)."""
        ns, name = namespace, workload
        self.min_replicas.labels(ns, name).set(spec.min_replicas)
        self.max_replicas.labels(ns, name).set(spec.max_replicas)
        self.fallback_active.labels(ns, name)
        self.undrained_removals.labels(ns, name)
        for direction in DIRECTIONS:
            self.scale_events.labels(ns, name, direction)
        for stage in DRAIN_STAGES:
            self.drains.labels(ns, name, stage)
        triggers = {t.name for t in spec.triggers}
        for old in self._triggers.get((ns, name), set()) - triggers:
            self._forget_trigger(ns, name, old)
        self._triggers[ns, name] = triggers
        for trigger in triggers:
            self.source_errors.labels(ns, name, trigger)
        if observed is not None:
            self._bind(ns, name, spec, observed)
        for queue in (q for t in spec.redis_triggers for q in t.lists):
            self.reaped_messages.labels(queue)
            self.dead_lettered.labels(queue)

    def _bind(self, ns: str, name: str, spec: ScalingSpec, observed: Observed) -> None:
        self.desired_replicas.labels(ns, name).set_function(observed.desired)
        self.current_replicas.labels(ns, name).set_function(observed.current_replicas)
        self.fallback_active.labels(ns, name).set_function(observed.fallback)
        for i, trigger in enumerate(spec.triggers):
            fields = [(self.metric_value, "value")]
            if isinstance(trigger, RedisTrigger | RedisStreamTrigger):  # queue triggers
                fields += [(self.backlog, "backlog"), (self.in_flight, "in_flight")]
            for gauge, field in fields:
                gauge.labels(ns, name, trigger.name).set_function(
                    functools.partial(observed.reading, i, field)
                )

    def count_decisions(self, counters: Sequence[Counter]) -> None:
        """One more decision on each of these ``decisions`` children (the steady ones)."""
        self.decisions.inc_each(counters)

    def forget(self, namespace: str, workload: str) -> None:
        """Drop a deleted workload's series so they don't linger as stale values.

        The per-queue reaper counters stay: another workload may consume the same list.
        """
        ns, name = namespace, workload
        for metric in (
            self.desired_replicas,
            self.current_replicas,
            self.fallback_active,
            self.spec_valid,
            self.min_replicas,
            self.max_replicas,
            self.undrained_removals,
        ):
            with contextlib.suppress(KeyError):
                metric.remove(ns, name)
        for gauge in (self.redis_memory_ratio, self.redis_maxmemory_unset):
            with contextlib.suppress(KeyError):
                gauge.remove(ns, name)
        for labelled, values in (
            (self.redis_durability_risk, DURABILITY_RISKS),
            (self.decisions, [str(r) for r in Reason]),
            (self.scale_events, DIRECTIONS),
            (self.drains, DRAIN_STAGES),
        ):
            for value in values:
                with contextlib.suppress(KeyError):
                    labelled.remove(ns, name, value)
        for trigger in self._triggers.pop((ns, name), set()):
            self._forget_trigger(ns, name, trigger)

    def _forget_trigger(self, namespace: str, workload: str, trigger: str) -> None:
        for metric in (self.backlog, self.in_flight, self.metric_value, self.source_errors):
            with contextlib.suppress(KeyError):
                metric.remove(namespace, workload, trigger)


async def watch_event_loop_lag(gauge: Gauge) -> None:
    """Until cancelled: sleep ``LAG_PROBE_S``, note how late the wake-up came; the gauge
    holds the longest over the last ``LAG_WINDOW_S`` (a cycle, a GC pause, a scrape...)."""
    loop = asyncio.get_running_loop()
    window: collections.deque[tuple[float, float]] = collections.deque()
    while True:
        before = loop.time()
        await asyncio.sleep(LAG_PROBE_S)
        now = loop.time()
        window.append((now, max(0.0, now - before - LAG_PROBE_S)))
        while window[0][0] < now - LAG_WINDOW_S:
            window.popleft()
        gauge.set(max(lag for _, lag in window))


async def start_http_server(
    registry: CollectorRegistry,
    port: int,
    *,
    host: str = "0.0.0.0",  # a pod's metrics port must be reachable from Prometheus
    ready: Callable[[], bool] = lambda: True,
    alive: Callable[[], bool] = lambda: True,
    routes: Iterable[web.RouteDef] = (),
    max_age_s: float = 0.0,
    render: Callable[[], bytes] | None = None,
    serve_stale: bool = False,
) -> web.AppRunner:
    """Serve /metrics, /healthz and /readyz, plus ``routes`` (the sidecar's /protection);
    returns the runner to ``cleanup()`` on stop. /metrics is rendered off the event loop;
    how old it may be: ``autoscaler.exposition.Exposition``."""

    exposition = Exposition(registry, max_age_s, render, serve_stale=serve_stale)

    async def metrics(_: web.Request) -> web.Response:
        body = await exposition.body()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def probe(check: Callable[[], bool]) -> Callable[[web.Request], object]:
        async def handler(_: web.Request) -> web.Response:
            ok = check()
            return web.Response(text="ok\n" if ok else "not ready\n", status=200 if ok else 503)

        return handler

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", probe(alive))  # type: ignore[arg-type]
    app.router.add_get("/readyz", probe(ready))  # type: ignore[arg-type]
    app.add_routes(routes)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    logger.info("metrics server listening port=%d", port)
    return runner
