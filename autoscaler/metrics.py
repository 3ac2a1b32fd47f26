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
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from enum import StrEnum
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
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from autoscaler import NAME, __version__
from autoscaler.exposition import Body, Exposition
from autoscaler.policy import Reason, RedisStreamTrigger, RedisTrigger
from autoscaler.workloadseries import TRIGGER, Child, Family, KeyedCounters, WorkloadStore

if TYPE_CHECKING:
    from autoscaler.policy import ScalingSpec

logger = logging.getLogger(__name__)

# No ``<counter>_created`` samples: no dashboard or alert reads them, and at 10,000
# workloads they were a third of every scrape (11 of ~33 lines a workload).
disable_created_metrics()  # type: ignore[no-untyped-call]
LAG_PROBE_S = 0.1  # how often the event loop's lag is sampled
LAG_WINDOW_S = 10.0  # the lag gauge shows the longest stall over this long

METRIC_PREFIX = NAME.replace("-", "_") + "_"
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


DRAIN_STAGES = tuple(str(stage) for stage in DrainStage)
DURABILITY_RISKS = ("no_persistence", "eviction")  # redis_durability_risk{risk}


# Observed.gauges(): per workload, then per trigger (see workloadseries: head, stride)
DESIRED, CURRENT, FALLBACK = range(3)
VALUE, BACKLOG, IN_FLIGHT = range(3)


class Observed(Protocol):
    """What the per-workload gauges read, when rendered, from one workload the loop
    tracks (``controller.workload.Workload``)."""

    def gauges(self) -> Sequence[float | None]:
        """Desired replicas, current replicas and fallback active (1 or 0) as of the last
        decision; then, per trigger in the spec's order, its reading's value, backlog and
        in-flight count. None (or too short a list): not known — no decision yet, or the
        trigger's last read failed: shown as NaN, a gap, never a stale or made-up value."""
        ...


class ControllerMetrics:
    """The controller's series. One instance per process, on an injected registry.

    The per-workload and per-queue families live in a ``WorkloadStore`` (compact, rendered
    in cached blocks: ``autoscaler.workloadseries``), registered as one collector, first;
    the few process-wide series are prometheus_client metrics. Both answer ``labels(...)``
    with the same verbs (``inc``, ``set``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.store = store = WorkloadStore(head=3, stride=3)
        self._others: Collector | None = None  # the prometheus_client metrics, for render
        p = METRIC_PREFIX

        def gauge(name: str, doc: str, label: str | None = None, values: Sequence[str] = (),
                  bound: int | None = None) -> Family:  # fmt: skip
            return Family(store, p + name, doc, "gauge", label, values, bound)

        def counter(name: str, doc: str, label: str | None = None,
                    values: Sequence[str] = (), deferred: bool = False) -> Family:  # fmt: skip
            return Family(store, p + name, doc, "counter", label, values, deferred=deferred)

        self.backlog = gauge("backlog", "Queued messages per trigger.", TRIGGER,
                             bound=BACKLOG)  # fmt: skip
        self.in_flight = gauge("in_flight", "Messages held by consumers per trigger.",
                               TRIGGER, bound=IN_FLIGHT)  # fmt: skip
        self.metric_value = gauge("metric_value", "Load value a trigger sizes on.", TRIGGER,
                                  bound=VALUE)  # fmt: skip
        self.desired_replicas = gauge(
            "desired_replicas", "Replicas the last decision asked for.",
            bound=DESIRED,
        )  # fmt: skip
        self.current_replicas = gauge(
            "current_replicas", "Replicas the workload had at the last decision.",
            bound=CURRENT,
        )  # fmt: skip
        # every workload counts a decision every cycle: queued, added when rendered
        self.decisions = counter("decisions", "Decisions by reason.", "reason",
                                 [str(r) for r in Reason], deferred=True)  # fmt: skip
        self.scale_events = counter(
            "scale_events", "Replica changes written, by direction.", "direction", DIRECTIONS
        )
        self.source_errors = counter("source_errors", "Failed trigger reads.", TRIGGER)
        self.fallback_active = gauge(
            "fallback_active", "1 while fallback-replicas is in force.",
            bound=FALLBACK,
        )  # fmt: skip
        self.redis_memory_ratio = gauge(
            "redis_memory_ratio",
            "used_memory/maxmemory of the workload's Redis, for redis-memory-high watermarks "
            "(read every few cycles).",
        )
        self.redis_maxmemory_unset = gauge(
            "redis_maxmemory_unset",
            "1 while the workload sets redis-memory-high and its Redis has maxmemory 0 (no "
            "ratio: the watermarks cannot fire).",
        )
        self.redis_durability_risk = gauge(
            "redis_durability_risk",
            "1 while the workload's Redis can lose messages, by risk: no_persistence "
            "(neither AOF nor RDB) or eviction (an allkeys-*/volatile-* maxmemory-policy).",
            "risk",
            DURABILITY_RISKS,
        )
        self.min_replicas = gauge("min_replicas", "The min-replicas annotation.")
        self.max_replicas = gauge("max_replicas", "The max-replicas annotation.")
        self.spec_valid = gauge("spec_valid", "1 when the workload's annotations parse, else 0.")
        self.drains = counter(
            "drains",
            "Drain funnel: requested, then one of acknowledged, timed_out (scaled down "
            "anyway), cancelled (load rose, pods Kubernetes would remove changed, or "
            "someone else scaled) or aborted (error or controller stop).",
            "stage",
            DRAIN_STAGES,
        )
        self.undrained_removals = counter(
            "undrained_pod_removals", "Pods the ReplicaSet removed that were not the drained ones."
        )
        self.reaped_messages = KeyedCounters(
            store, p + "reaped_messages", "Messages returned to the queue from dead consumers.",
            "queue",
        )  # fmt: skip
        self.dead_lettered = KeyedCounters(
            store, p + "dead_lettered", "Messages the reaper moved to the dead-letter list.",
            "queue",
        )  # fmt: skip
        registry.register(store)
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

    def render(self) -> list[bytes]:
        """This registry's /metrics body in parts, joined byte for byte what
        ``generate_latest`` gives, fast: the store's cached blocks (the parts are the
        cache's own: serving them copies nothing, ~19 MB at 10,000 workloads), then the few
        prometheus_client metrics. Called from one thread at a time
        (``exposition.Exposition``: a worker thread)."""
        if self._others is None:
            wrappers = [v for v in vars(self).values() if isinstance(v, MetricWrapperBase)]
            self._others = _Chain(wrappers)
        parts = self.store.render()
        parts.append(generate_latest(self._others))
        return parts

    def track(
        self, namespace: str, workload: str, spec: ScalingSpec, observed: Observed | None = None
    ) -> None:
        """A workload's spec (re)parsed: set its bounds, create its counters at zero, and
        bind its gauges to ``observed``.

        Bound, not set: each of these gauges reads ``observed`` when rendered, so a cycle
        in which 10,000 workloads move sets no gauge at all (``labels().set()`` was ~45%
        of such a cycle's CPU: bench/bench_cycle.py --moving, docs/performance.md)."""
        ns, name = namespace, workload
        self.min_replicas.labels(ns, name).set(spec.min_replicas)
        self.max_replicas.labels(ns, name).set(spec.max_replicas)
        queue = (self.source_errors, self.metric_value, self.backlog, self.in_flight)
        other = (self.source_errors, self.metric_value)
        # by name (the last of two alike wins, as one series each), in the spec's order
        triggers = {t.name: queue if isinstance(t, RedisTrigger | RedisStreamTrigger) else other
                    for t in spec.triggers}  # fmt: skip
        zero: list[Family | tuple[Family, str]] = [self.fallback_active, self.undrained_removals]
        zero += [(self.scale_events, direction) for direction in DIRECTIONS]
        zero += [(self.drains, stage) for stage in DRAIN_STAGES]
        bound = (self.desired_replicas, self.current_replicas, self.fallback_active)
        self.store.track(ns, name, observed, triggers.items(), zero, bound)
        for queue_name in (q for t in spec.redis_triggers for q in t.lists):
            self.reaped_messages.labels(queue_name)
            self.dead_lettered.labels(queue_name)

    def count_decisions(self, counters: Sequence[Child]) -> None:
        """One more decision on each of these ``decisions`` children (the steady ones)."""
        self.decisions.inc_each(counters)

    def forget(self, namespace: str, workload: str) -> None:
        """Drop a deleted workload's series so they don't linger as stale values.

        The per-queue reaper counters stay: another workload may consume the same list.
        """
        self.store.forget(namespace, workload)


class _Chain(Collector):
    """Some metrics' families, in order: ``generate_latest`` of them alone."""

    def __init__(self, metrics: Sequence[Collector]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return [family for m in self.metrics for family in m.collect()]


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


def _batched(parts: list[bytes], size: int = 1 << 20) -> Iterator[bytes]:
    """The parts, joined into writes of about ``size`` bytes (one per part: ~6,000
    writes at 10,000 workloads; one join of the whole: a second copy of the body)."""
    batch: list[bytes] = []
    length = 0
    for part in parts:
        batch.append(part)
        length += len(part)
        if length >= size:
            yield b"".join(batch)
            batch, length = [], 0
    if batch:
        yield b"".join(batch)


async def start_http_server(
    registry: CollectorRegistry,
    port: int,
    *,
    host: str = "0.0.0.0",  # a pod's metrics port must be reachable from Prometheus
    ready: Callable[[], bool] = lambda: True,
    alive: Callable[[], bool] = lambda: True,
    routes: Iterable[web.RouteDef] = (),
    max_age_s: float = 0.0,
    render: Callable[[], Body] | None = None,
    serve_stale: bool = False,
) -> web.AppRunner:
    """Serve /metrics, /healthz and /readyz, plus ``routes`` (the sidecar's /protection);
    returns the runner to ``cleanup()`` on stop. /metrics is rendered off the event loop;
    how old it may be: ``autoscaler.exposition.Exposition``."""

    exposition = Exposition(registry, max_age_s, render, serve_stale=serve_stale)

    async def metrics(request: web.Request) -> web.StreamResponse:
        body = await exposition.body()
        if isinstance(body, bytes):
            return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE_LATEST})
        response.content_length = sum(map(len, body))
        await response.prepare(request)
        for chunk in _batched(body):
            await response.write(chunk)
        await response.write_eof()
        return response

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
