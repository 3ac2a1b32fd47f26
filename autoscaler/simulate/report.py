"""What a run is judged on: the summary per policy, as a table, as JSON, as a plot.

Metrics (per policy, one trace):

- ``replica_seconds`` — the bill: every replica from its request to its removal;
- ``wait_p50_s`` / ``wait_p95_s`` / ``wait_max_s`` — time from a message's arrival to the
  start of its final processing, nearest-rank percentiles over messages (``null`` when
  none was processed);
- ``max_backlog`` — the most messages queued (not in flight) at once;
- ``scale_events`` — changes of the requested count; ``direction_changes`` — up↔down flips;
- ``interrupted_messages`` — in flight in a pod that was killed (redelivered, waited again);
- ``time_to_first_scale_up_s`` — from the first arrival to the first scale-up (``null``:
  none);
- ``unfinished_messages`` — never processed before the run's safety cap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from autoscaler.errors import InputError
from autoscaler.simulate import Result

Summary = dict[str, float | int | None]

# metric → its column head in the table (the JSON uses the metric names)
COLUMNS = {
    "replica_seconds": "replica_s",
    "wait_p50_s": "p50_s",
    "wait_p95_s": "p95_s",
    "wait_max_s": "max_wait_s",
    "max_backlog": "max_backlog",
    "scale_events": "scales",
    "direction_changes": "flips",
    "interrupted_messages": "interrupted",
    "time_to_first_scale_up_s": "first_up_s",
    "unfinished_messages": "unfinished",
}
METRICS = tuple(COLUMNS)


def summarize(result: Result, first_arrival_s: int | None) -> Summary:
    """The metrics of one run, in seconds and messages."""
    k = result.ticks_per_s
    first_up = None
    if result.first_scale_up_tick is not None and first_arrival_s is not None:
        first_up = round(result.first_scale_up_tick / k - first_arrival_s, 3)
    return {
        "replica_seconds": round(result.replica_ticks / k, 3),
        "wait_p50_s": _percentile(result, 0.50),
        "wait_p95_s": _percentile(result, 0.95),
        "wait_max_s": _percentile(result, 1.0),
        "max_backlog": result.max_backlog,
        "scale_events": result.scale_events,
        "direction_changes": result.direction_changes,
        "interrupted_messages": result.interrupted,
        "time_to_first_scale_up_s": first_up,
        "unfinished_messages": result.arrivals - result.processed,
    }


def _percentile(result: Result, p: float) -> float | None:
    """Nearest rank: the smallest wait with at least ``p`` of the messages at or below it."""
    total = sum(result.waits.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(p * total - 1e-9))
    seen = 0
    for wait in sorted(w for w, n in result.waits.items() if n):
        seen += result.waits[wait]
        if seen >= rank:
            return round(wait / result.ticks_per_s, 3)
    raise AssertionError("unreachable: ranks are within the total")


def table(sections: Sequence[tuple[str, Mapping[str, Summary]]]) -> str:
    """One row per (trace, policy), one column per metric, aligned; a verdict per trace."""
    heads = ["trace", "policy", *COLUMNS.values()]
    rows = [heads]
    verdicts = []
    for name, policies in sections:
        for policy, summary in policies.items():
            rows.append([name, policy, *(_cell(summary[m]) for m in METRICS)])
        verdicts.append(f"{name}: {verdict(policies)}")
    widths = [max(len(row[i]) for row in rows) for i in range(len(heads))]
    lines = [
        "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    return "\n".join([*lines, "", *verdicts])


def verdict(policies: Mapping[str, Summary]) -> str:
    """Replica-seconds saved and p95 wait against the baseline, in one line."""
    ours, keda = policies["queue_autoscaler"], policies["keda_hpa"]
    saved = 1 - _num(ours["replica_seconds"]) / max(_num(keda["replica_seconds"]), 1e-9)
    p95_ours, p95_keda = ours["wait_p95_s"], keda["wait_p95_s"]
    wait_ok = p95_ours is None or (p95_keda is not None and p95_ours <= p95_keda)
    goal = saved >= 0.30 and wait_ok and ours["interrupted_messages"] == 0
    return (
        f"{saved:+.0%} replica-seconds saved, p95 wait {_cell(p95_ours)} s vs {_cell(p95_keda)} s, "
        f"{ours['interrupted_messages']} vs {keda['interrupted_messages']} interrupted"
        f" — goal (≥30% saved, p95 no worse, 0 interrupted) {'met' if goal else 'NOT met'}"
    )


def plot(sections: Sequence[tuple[str, Mapping[str, Result]]], path: Path) -> None:
    """Backlog and replicas over time, both policies, one row per trace (PNG, Agg)."""
    from matplotlib.figure import Figure  # imported here: matplotlib takes ~0.3 s to load

    fig = Figure(figsize=(12, 3.2 * len(sections)), layout="constrained")
    axes = fig.subplots(len(sections), 2, squeeze=False)
    for row, (name, results) in zip(axes, sections, strict=True):
        for result in results.values():
            k = result.ticks_per_s
            times = [t / k for t, _, _ in result.series] + [result.end_tick / k]
            backlog = [b for _, b, _ in result.series]
            replicas = [r for _, _, r in result.series]
            row[0].stairs(backlog, times, label=result.policy)
            row[1].stairs(replicas, times, label=result.policy)
        row[0].set(title=f"{name}: backlog", xlabel="time (s)", ylabel="messages queued")
        row[1].set(title=f"{name}: replicas", xlabel="time (s)", ylabel="replicas")
        row[0].legend()
        row[1].legend()
    try:
        fig.savefig(path, format="png", dpi=100)
    except OSError as e:
        raise InputError(f"--plot: {path}: cannot write: {e.strerror or e}") from e


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}"


def _num(value: float | int | None) -> float:
    return 0.0 if value is None else float(value)
