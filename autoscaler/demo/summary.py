"""The demo's closing numbers, its timeline plot, and its trace for ``simulate``.

Counting (every produced id is in exactly one bucket, except duplicates):

- *processed*: ids the processors answered 200 for at least once (``demo:processed``);
- *duplicated*: extra successful processings (at-least-once delivery after a crash);
- *dead_lettered*: ids in the dead-letter list, never processed;
- *pending*: ids still in the queue or a processing list (only when interrupted);
- *lost*: every other produced id — must be 0.

Waits are from enqueue to the start of the last successful processing, in seconds.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from autoscaler.demo.view import Mark, Sample
from autoscaler.errors import InputError
from autoscaler.keys import processing_prefix

JSON_KEYS = (
    "produced",
    "processed",
    "duplicated",
    "lost",
    "dead_lettered",
    "replica_seconds",
    "wait_p50_s",
    "wait_p95_s",
)


@dataclass(frozen=True)
class Summary:
    produced: int
    processed: int
    duplicated: int
    lost: int
    dead_lettered: int
    replica_seconds: float
    wait_p50_s: float | None
    wait_p95_s: float | None
    pending: int = 0
    wall_s: float = 0.0
    peak_replicas: int = 0
    final_replicas: int = 0
    restarts: int = 0
    startup_p50_s: float | None = None  # replica start → consumer running
    drains: int = 0  # scale-downs whose victims all acknowledged ``drained``
    undrained_removals: int = 0  # replicas removed that were not drained victims: must be 0

    def as_json(self) -> dict[str, object]:
        """The stable keys first (the contract of ``--json``), then the extras."""
        body = asdict(self)
        return {key: body[key] for key in (*JSON_KEYS, *(k for k in body if k not in JSON_KEYS))}

    def text(self) -> str:
        def secs(value: float | None) -> str:
            return "-" if value is None else f"{value:.2f} s"

        rows = [
            ("produced", str(self.produced)),
            ("processed", str(self.processed)),
            ("duplicated", str(self.duplicated)),
            ("lost", str(self.lost)),
            ("dead-lettered", str(self.dead_lettered)),
            ("pending", str(self.pending)),
            ("replica-seconds", f"{self.replica_seconds:.1f}"),
            ("wait p50 / p95", f"{secs(self.wait_p50_s)} / {secs(self.wait_p95_s)}"),
            ("peak replicas", str(self.peak_replicas)),
            ("restarts", str(self.restarts)),
            ("replica startup", f"{secs(self.startup_p50_s)} (median)"),
            ("drains", f"{self.drains} acknowledged, {self.undrained_removals} undrained removals"),
            ("wall time", f"{self.wall_s:.1f} s"),
        ]
        return "\n".join(["demo summary"] + [f"  {k:<16}{v}" for k, v in rows])


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in [0, 1]); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _ids(messages: Iterable[bytes | str]) -> set[str]:
    out = set()
    for raw in messages:
        try:
            out.add(str(json.loads(raw)["id"]))
        except (ValueError, KeyError, TypeError):
            continue  # not a demo message
    return out


async def _held_ids(redis: Redis, queue: str) -> set[str]:
    """Ids still in the queue or in any consumer's processing list."""
    held = [queue]
    async for key in redis.scan_iter(match=processing_prefix(queue) + "*"):
        held.append(_text(key))
    still: set[str] = set()
    for key in held:
        still |= _ids(await redis.lrange(key, 0, -1))
    return still


async def collect(
    redis: Redis,
    *,
    produced: Sequence[str],
    queue: str,
    record_key: str,
    dead_key: str,
    replica_seconds: float,
    wall_s: float,
    series: Sequence[Sample],
    restarts: int = 0,
    startup_s: Sequence[float] = (),
) -> Summary:
    counts = {_text(k): int(v) for k, v in (await redis.hgetall(record_key)).items()}
    waits = {_text(k): float(v) for k, v in (await redis.hgetall(f"{record_key}:waits")).items()}
    still = await _held_ids(redis, queue)
    dead = _ids(await redis.lrange(dead_key, 0, -1))
    done = counts
    wanted = set(produced)
    processed = wanted & done.keys()
    dead_lettered = (wanted & dead) - processed
    pending = (wanted & still) - processed - dead_lettered
    wait_values = [v for k, v in waits.items() if k in processed]
    return Summary(
        produced=len(wanted),
        processed=len(processed),
        duplicated=sum(done[i] - 1 for i in processed),
        lost=len(wanted - processed - dead_lettered - pending),
        dead_lettered=len(dead_lettered),
        replica_seconds=round(replica_seconds, 1),
        wait_p50_s=_round(percentile(wait_values, 0.50)),
        wait_p95_s=_round(percentile(wait_values, 0.95)),
        pending=len(pending),
        wall_s=round(wall_s, 1),
        peak_replicas=max((s.current for s in series), default=0),
        final_replicas=series[-1].current if series else 0,
        restarts=restarts,
        startup_p50_s=_round(percentile(startup_s, 0.5)),
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def write_trace(path: Path, per_second: Mapping[int, int], end_s: int) -> None:
    """The arrivals as a ``simulate --trace`` CSV, one row per second up to ``end_s``."""
    rows = ["t_s,arrivals"] + [f"{t},{per_second.get(t, 0)}" for t in range(max(end_s, 1))]
    path.write_text("\n".join(rows) + "\n")


# How each kind of mark is drawn: (colour, line style, line width, legend label).
MARK_STYLE = {
    "acknowledged": ("tab:green", "-", 1.6, "drain done"),
    "cancelled": ("tab:purple", "--", 1.6, "drain cancelled (load rose)"),
    "timed_out": ("tab:red", "--", 1.6, "drain timed out"),
    "ChaosKill": ("dimgray", ":", 1.0, "chaos kill (SIGKILL)"),
}


def plot(series: Sequence[Sample], path: Path, title: str, marks: Sequence[Mark] = ()) -> None:
    """The run as two panels sharing time: the backlog above; replicas (current, desired)
    and messages in flight below, on one small scale where both are readable (in flight
    is at most replicas × concurrency). Drains and chaos kills are vertical lines on both.
    Legends sit outside the axes, so they hide no line. The format is the extension's."""
    try:  # imported here: matplotlib takes ~0.3 s to load, and is an extra
        from matplotlib.figure import Figure
    except ModuleNotFoundError as e:
        raise InputError("--plot needs matplotlib: pip install 'queue-autoscaler[plot]'") from e

    t = [s.t_s for s in series]
    fig = Figure(figsize=(11, 6), dpi=100, layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(1, 1))
    top.fill_between(t, [s.backlog for s in series], step="post", color="tab:blue", alpha=0.25)
    top.step(t, [s.backlog for s in series], where="post", color="tab:blue",
             label="backlog (messages queued)")  # fmt: skip
    top.set(ylabel="messages queued", title=title)
    top.set_ylim(bottom=0)
    bottom.fill_between(t, [s.in_flight for s in series], step="post", color="tab:cyan",
                        alpha=0.35, label="messages in flight")  # fmt: skip
    bottom.step(t, [s.current for s in series], where="post", color="tab:red", linewidth=2,
                label="replicas (current)")  # fmt: skip
    desired = [math.nan if s.desired is None else s.desired for s in series]
    bottom.step(t, desired, where="post", color="tab:orange", linestyle="--",
                label="replicas (desired)")  # fmt: skip
    peak = max([*(s.current for s in series), *(s.in_flight for s in series), 1])
    bottom.set(xlabel="seconds since start", ylabel="replicas / messages in flight")
    bottom.set_ylim(0, peak + 1)
    shown: set[str] = set()
    for mark in marks:
        if mark.kind not in MARK_STYLE:
            continue
        colour, style, width, label = MARK_STYLE[mark.kind]
        for axes in (top, bottom):
            axes.axvline(mark.t_s, color=colour, linestyle=style, linewidth=width, alpha=0.8,
                         label=None if mark.kind in shown or axes is top else label)  # fmt: skip
        shown.add(mark.kind)
    for axes in (top, bottom):
        axes.grid(alpha=0.3)
        axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small")
    save(fig, path, "--plot")


def save(fig: Any, path: Path, flag: str) -> None:
    """Write ``fig`` in the format of ``path``'s extension (png, svg, pdf)."""
    fmt = path.suffix.lower().removeprefix(".") or "png"
    try:
        fig.savefig(path, format=fmt)
    except (OSError, ValueError) as e:
        raise InputError(f"{flag}: {path}: cannot write: {e}") from e
