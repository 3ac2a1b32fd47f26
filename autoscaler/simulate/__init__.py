"""``autoscaler simulate``: replay a workload trace through our policy and through KEDA + HPA.

Why: the claim "fewer replica-seconds than KEDA+HPA for the same queue wait, and no
interrupted message" must be checkable offline, on any trace, by anyone. The pieces:

- ``trace``  — ``t_s,arrivals`` CSV files, with errors naming file and line;
- ``engine`` — the deterministic queue/replica simulation both policies share;
- ``ours``   — the pure :func:`autoscaler.policy.decide` with drain-before-scale-down;
- ``keda``   — the KEDA Redis-lists scaler + HPA with their documented defaults;
- ``report`` — the summary metrics, the table, the JSON and the plot;
- ``cli``    — the subcommand.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from autoscaler.policy import ScalingSpec
from autoscaler.simulate.engine import Cluster, Params, SimulatedScaler
from autoscaler.simulate.keda import KedaHpa, KedaSettings
from autoscaler.simulate.ours import Ours
from autoscaler.simulate.trace import Trace

__all__ = ["CAP_S", "Params", "Result", "compare", "run"]

CAP_S = 24 * 3600  # safety cap after the end of the trace
PROGRESS_EVERY = 100_000  # loop turns between two ``progress`` calls (~0.1 s of work)

# Called now and then with (policy, the share of the trace replayed, 0–1).
Progress = Callable[[str, float], None]


@dataclass
class Result:
    """What one policy did over one trace; ``report`` turns it into the summary."""

    policy: str
    ticks_per_s: int
    end_tick: int
    replica_ticks: int
    waits: Counter[int]  # wait in ticks → messages
    max_backlog: int
    scale_events: int
    direction_changes: int
    interrupted: int
    first_scale_up_tick: int | None
    arrivals: int
    processed: int
    series: list[tuple[int, int, int]] = field(default_factory=list)  # tick, backlog, replicas


def compare(
    trace: Trace,
    spec: ScalingSpec,
    params: Params,
    progress: Progress | None = None,
    start_wall_s: float | None = None,
) -> dict[str, Result]:
    """Both policies over the same trace and workload, ours first. ``start_wall_s``: the
    trace's t=0 as epoch seconds, for the spec's ``schedule`` (``simulate --start``)."""
    k = params.ticks_per_s()
    ours = run(trace, Ours(spec, k, start_wall_s), params, progress=progress)
    if spec.drain and ours.interrupted:  # the product's promise: fail loudly, never report it
        raise RuntimeError(f"{ours.interrupted} messages interrupted despite drain")
    keda = run(trace, KedaHpa(KedaSettings.like(spec), k), params, progress=progress)
    return {ours.policy: ours, keda.policy: keda}


def run(
    trace: Trace,
    controller: SimulatedScaler,
    params: Params,
    *,
    cap_s: int = CAP_S,
    progress: Progress | None = None,
    progress_every: int = PROGRESS_EVERY,
) -> Result:
    """Replay ``trace`` through ``controller``, event tick to event tick (model: ``engine``)."""
    cluster = Cluster(params)
    k = cluster.k
    arrivals = [(t * k, n) for t, n in zip(trace.times, trace.arrivals, strict=True) if n]
    arrivals.reverse()  # popped from the end, oldest first
    first = trace.first_arrival_s
    cluster.first_up_after = None if first is None else first * k
    cluster.request(controller.initial_replicas, 0, warm=True)
    trace_end, cap = trace.end_s * k, (trace.end_s + cap_s) * k
    series: list[tuple[int, int, int]] = [(0, 0, cluster.replica_count)]
    max_backlog = 0
    turns = 0
    while True:
        turns += 1
        tick = _next_tick(controller, cluster, arrivals, never=cap + 1)
        if progress is not None and turns % progress_every == 0:
            progress(controller.name, min(1.0, tick / max(trace_end, 1)))
        idle = not arrivals and not cluster.backlog and not cluster.in_flight
        if (idle and tick >= max(trace_end, cluster.last_done)) or tick > cap:
            break
        cluster.step(tick)
        if arrivals and arrivals[-1][0] == tick:
            cluster.arrive(*arrivals.pop())
        cluster.dispatch(tick)
        if controller.next_tick == tick:
            controller.control(cluster, tick)
            cluster.dispatch(tick)
            if controller.next_tick <= tick:
                raise RuntimeError(f"{controller.name}: next tick {controller.next_tick} ≤ {tick}")
        max_backlog = max(max_backlog, cluster.backlog)
        if series[-1][1:] != (cluster.backlog, cluster.replica_count):
            series.append((tick, cluster.backlog, cluster.replica_count))
    end = max(trace_end, cluster.last_done) if idle else cap
    return _result(controller.name, cluster, end, trace.total, max_backlog, series)


def _next_tick(
    controller: SimulatedScaler, cluster: Cluster, arrivals: list[tuple[int, int]], never: int
) -> int:
    """The earliest of: the controller's turn, a completion or readiness, an arrival."""
    event = cluster.next_event()
    arrival = arrivals[-1][0] if arrivals else never
    return min(controller.next_tick, never if event is None else event, arrival)


def _result(
    policy: str,
    cluster: Cluster,
    end: int,
    arrivals: int,
    max_backlog: int,
    series: list[tuple[int, int, int]],
) -> Result:
    """The books at ``end``: replicas still alive are billed until then."""
    billed = sum((end if r.removed is None else r.removed) - r.requested for r in cluster.replicas)
    return Result(
        policy=policy,
        ticks_per_s=cluster.k,
        end_tick=end,
        replica_ticks=billed,
        waits=cluster.waits,
        max_backlog=max_backlog,
        scale_events=cluster.scale_events,
        direction_changes=cluster.direction_changes,
        interrupted=cluster.interrupted,
        first_scale_up_tick=cluster.first_scale_up,
        arrivals=arrivals,
        processed=cluster.processed,
        series=series,
    )
