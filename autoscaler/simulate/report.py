"""What a run is judged on: the summary per policy, as a table, as JSON, as a plot.

Metrics (per policy, one trace):

- ``replica_seconds`` — the bill: every replica from its request to its removal;
- ``wait_p50_s`` / ``wait_p95_s`` / ``wait_max_s`` — time from a message's arrival to the
  start of its final processing, nearest-rank percentiles over messages (``null`` when
  none was processed);
- ``max_backlog`` — the most messages queued (not in flight) at once;
- ``scale_events`` — changes of the requested count; ``direction_changes`` — reversals: a
  change in the other direction than the one before (up then down, or down then up);
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

from autoscaler.argtypes import PLOT_FORMATS
from autoscaler.errors import InputError
from autoscaler.simulate import Result
from autoscaler.simulate.trace import Trace

Summary = dict[str, float | int | None]

# metric → its column head in the table (the JSON uses the metric names)
COLUMNS = {
    "replica_seconds": "replica_s",
    "wait_p50_s": "p50_s",
    "wait_p95_s": "p95_s",
    "wait_max_s": "max_wait_s",
    "max_backlog": "max_backlog",
    "scale_events": "scales",
    "direction_changes": "reversals",
    "interrupted_messages": "interrupted",
    "time_to_first_scale_up_s": "first_up_after_s",
    "unfinished_messages": "unfinished",
}
METRICS = tuple(COLUMNS)
# What each column means, printed under the table (and in ``simulate --help``).
LEGEND = {
    "replica_s": "replica-seconds billed: every replica from its request to its removal",
    "p50_s, p95_s, max_wait_s": "queue wait, from a message's arrival to its processing",
    "max_backlog": "most messages queued at once",
    "scales": "changes of the requested replica count",
    "reversals": "changes in the other direction than the one before (up then down…)",
    "interrupted": "messages in flight in a replica that was killed (processed again)",
    "first_up_after_s": "seconds from the first arrival to the first scale-up",
    "unfinished": "messages never processed (the run stops 24 h after the trace)",
}
# The policies' JSON keys → the names a reader knows them by.
POLICY_NAMES = {"queue_autoscaler": "queue-autoscaler", "keda_hpa": "KEDA + HPA (defaults)"}


def legend() -> str:
    """The columns, one per line, for the foot of the table."""
    width = max(map(len, LEGEND))
    return "\n".join(f"  {name:<{width}}  {meaning}" for name, meaning in LEGEND.items())


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
    """One row per (trace, policy), one column per metric, aligned; a comparison per
    trace, and what the columns mean."""
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
    return "\n".join([*lines, "", *verdicts, "", "columns:", legend()])


def verdict(policies: Mapping[str, Summary]) -> str:
    """Replica-seconds, p95 wait and interruptions against the baseline, in one line: the
    facts, no judgement (what is good enough is the reader's call)."""
    ours, keda = policies["queue_autoscaler"], policies["keda_hpa"]
    saved = 1 - _num(ours["replica_seconds"]) / max(_num(keda["replica_seconds"]), 1e-9)
    fewer = f"{saved:.0%} fewer" if saved >= 0 else f"{-saved:.0%} more"
    return (
        f"queue-autoscaler vs KEDA + HPA: {fewer} replica-seconds, p95 wait "
        f"{_cell(ours['wait_p95_s'])} s vs {_cell(keda['wait_p95_s'])} s, "
        f"{_cell(ours['interrupted_messages'])} vs {_cell(keda['interrupted_messages'])} "
        "messages interrupted"
    )


# How each policy is drawn: ours solid and wide underneath, the baseline dashed on top,
# so that where they coincide both stay visible.
STYLE = {
    "queue_autoscaler": {"color": "tab:blue", "linewidth": 2.4, "alpha": 0.8, "zorder": 2},
    "keda_hpa": {"color": "tab:orange", "linewidth": 1.3, "linestyle": "--", "zorder": 3},
}
ARRIVAL_BINS = 600  # bars drawn for the arrivals, whatever the trace's length


def plot(sections: Sequence[tuple[str, Trace, Mapping[str, Result]]], path: Path) -> None:
    """One row per trace: arrivals, backlog, replicas and replica-seconds so far, both
    policies on each. The format is the extension's (png, svg, pdf)."""
    try:  # imported here: matplotlib takes ~0.3 s to load, and is an extra
        from matplotlib.figure import Figure
    except ModuleNotFoundError as e:
        raise InputError("--plot needs matplotlib: pip install 'queue-autoscaler[plot]'") from e

    fig = Figure(figsize=(17, 3.4 * len(sections) + 0.6), layout="constrained")
    axes = fig.subplots(len(sections), 4, squeeze=False)
    for row, (name, trace, results) in zip(axes, sections, strict=True):
        _arrivals(row[0], trace)
        for policy, result in results.items():
            k, style = result.ticks_per_s, STYLE.get(policy, {})
            times = [t / k for t, _, _ in result.series] + [result.end_tick / k]
            label = POLICY_NAMES.get(policy, policy)
            row[1].stairs([b for _, b, _ in result.series], times, label=label, **style)
            row[2].stairs([r for _, _, r in result.series], times, label=label, **style)
            row[3].plot(*_replica_seconds(result), label=label, **style)
        totals = " vs ".join(f"{r.replica_ticks / r.ticks_per_s:,.0f}" for r in results.values())
        row[0].set(title=f"{name}: arrivals", ylabel="messages / s")
        row[1].set(title=f"{name}: backlog", ylabel="messages queued")
        row[2].set(title=f"{name}: replicas", ylabel="replicas")
        row[3].set(title=f"{name}: cost so far ({totals})", ylabel="replica-seconds")
        for axes_ in row:
            axes_.set(xlabel="time (s)")
            axes_.set_ylim(bottom=0)
            axes_.grid(alpha=0.3)
    # One legend for the figure, above the panels: none of them has a line hidden by it.
    handles, labels = axes[0][1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside upper center", ncols=len(labels))
    save_figure(fig, path, "--plot")


def _arrivals(axes: Any, trace: Trace) -> None:
    """Arrivals per second, averaged into at most ``ARRIVAL_BINS`` bars (a day-long trace
    has 86,400 seconds: drawn one by one they would be a smear)."""
    width = max(1, math.ceil(trace.end_s / ARRIVAL_BINS))
    bins = [0] * math.ceil(trace.end_s / width)
    for t, n in zip(trace.times, trace.arrivals, strict=True):
        bins[t // width] += n
    edges = [i * width for i in range(len(bins))] + [trace.end_s]
    rates = [n / (edges[i + 1] - edges[i]) for i, n in enumerate(bins)]
    axes.stairs(rates, edges, fill=True, color="tab:gray", alpha=0.4)
    axes.stairs(rates, edges, color="dimgray", linewidth=0.8)  # a one-second spike stays visible


def _replica_seconds(result: Result) -> tuple[list[float], list[float]]:
    """Replica-seconds accumulated at each change of the series (replicas × time)."""
    k = result.ticks_per_s
    times, totals, total = [0.0], [0.0], 0.0
    ends = [t for t, _, _ in result.series[1:]] + [result.end_tick]
    for (start, _, replicas), end in zip(result.series, ends, strict=True):
        total += replicas * (end - start) / k
        times.append(end / k)
        totals.append(total)
    return times, totals


def save_figure(fig: Any, path: Path, flag: str) -> None:
    """Write ``fig`` in the format its extension names; an unknown one is refused."""
    fmt = path.suffix.lower().removeprefix(".")
    if fmt not in PLOT_FORMATS:
        shown = ", ".join("." + f for f in PLOT_FORMATS)
        raise InputError(f"{flag}: {path}: the file name must end in {shown}")
    try:
        fig.savefig(path, format=fmt, dpi=100)
    except OSError as e:
        raise InputError(f"{flag}: {path}: cannot write: {e.strerror or e}") from e


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}"


def _num(value: float | int | None) -> float:
    return 0.0 if value is None else float(value)
