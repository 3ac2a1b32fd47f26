"""What the demo shows while it runs: a sampler, and a live view of its samples.

The ``Sampler`` reads, every ``interval_s``, what an operator would look at — the
queue (backlog), the consumers' registry (each replica's state and in-flight count),
the processed and dead-letter counts, the controller's last decision — and keeps the
series for the summary's plot. Its *history* is what happened, newest last: decisions
that change the count (a hold such as ``8 → 8`` is not news), drain outcomes (from the
controller's ``drains_total``: done, cancelled because the load rose, timed out) and
warning Events (a chaos kill, a replica restarted, an undrained removal). The view draws
the latest sample with rich when stdout is a terminal, else prints one plain line per
second (logs go to stderr either way).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TextIO

from redis.asyncio import Redis
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from autoscaler.redisqueue import ConsumerInfo, read_registry
from autoscaler.targets.local.target import LocalTarget

STATE_STYLE = {"running": "green", "draining": "yellow", "drained": "cyan", "starting": "dim"}
HISTORY_SHOWN = 6
# Drain outcomes (``drains_total`` stages) → what the history says of one.
DRAIN_OUTCOMES = {
    "acknowledged": "drain done: the victims finished their messages, then were removed",
    "cancelled": "drain cancelled: the load rose, the victims went back to work",
    "timed_out": "drain timed out: held messages pushed back, victims removed",
}
# Events that tell a drain's outcome: shown from ``drains_total`` already, so not twice.
DRAIN_EVENTS = frozenset({"DrainCancelled", "DrainTimedOut"})


@dataclass(frozen=True)
class Mark:
    """A moment worth a marker on the plot and a line in the history."""

    t_s: float
    kind: str  # a drain outcome (``DRAIN_OUTCOMES``), ``decision`` or an Event's reason
    text: str


@dataclass(frozen=True)
class ReplicaRow:
    name: str
    state: str  # running / draining / drained (registry), starting, restarting, stopping
    in_flight: int
    restarts: int


@dataclass(frozen=True)
class Sample:
    t_s: float  # since the demo started
    backlog: int
    in_flight: int
    processed: int  # distinct messages processed
    dead: int
    current: int
    desired: int | None
    rate_per_s: float
    replicas: tuple[ReplicaRow, ...] = ()
    decisions: tuple[str, ...] = ()


@dataclass
class Sampler:
    redis: Redis
    queue: str
    record_key: str
    dead_key: str
    target: LocalTarget
    desired: Callable[[], int | None]
    # Drains by outcome so far (``DRAIN_OUTCOMES`` keys); each new one becomes a ``Mark``.
    drain_counts: Callable[[], Mapping[str, int]] = dict
    started: float = field(default_factory=time.monotonic)
    series: list[Sample] = field(default_factory=list)
    marks: list[Mark] = field(default_factory=list)
    _status_at: float = -math.inf
    _event_at: float = -math.inf
    _last_change: tuple[object, ...] | None = None
    _drains: dict[str, int] = field(default_factory=dict)
    # Seconds from a replica's start to its consumer's first ``running`` heartbeat.
    startup_s: dict[str, float] = field(default_factory=dict)

    async def sample(self) -> Sample:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.llen(self.queue)
            pipe.hlen(self.record_key)
            pipe.llen(self.dead_key)
            backlog, processed, dead = await pipe.execute()
        rows = self._rows(await read_registry(self.redis, self.queue))
        now = time.monotonic() - self.started
        previous = self.series[-1] if self.series else None
        rate = 0.0
        if previous is not None and now > previous.t_s:
            rate = (int(processed) - previous.processed) / (now - previous.t_s)
        sample = Sample(
            t_s=now,
            backlog=int(backlog),
            in_flight=sum(r.in_flight for r in rows),
            processed=int(processed),
            dead=int(dead),
            current=len(self.target.live),
            desired=self.desired(),
            rate_per_s=max(0.0, rate),
            replicas=tuple(rows),
            decisions=tuple(self._history(now)),
        )
        self.series.append(sample)
        return sample

    def _rows(self, registry: list[ConsumerInfo]) -> list[ReplicaRow]:
        """Each replica's state: the registry's, or what the target knows before it."""
        consumers = {c.consumer_id: c for c in registry}
        rows = []
        for name, proc in [*self.target.live.items(), *self.target.removing.items()]:
            info = consumers.get(name)
            if name in self.target.removing:
                state = "stopping"
            elif not proc.running:
                state = "restarting"
            elif info is None or not info.lease_alive or info.state is None:
                state = "starting"
            else:
                state = info.state.value
            if state == "running" and name not in self.startup_s:
                self.startup_s[name] = time.monotonic() - proc.started_mono
            in_flight = info.in_flight or 0 if info is not None and info.lease_alive else 0
            rows.append(ReplicaRow(name, state, in_flight, proc.restarts))
        return rows

    def _history(self, now_s: float) -> list[str]:
        """The newest ``HISTORY_SHOWN`` lines of the history, after adding what is new."""
        offset = time.time() - now_s  # epoch of t=0, for the target's epoch timestamps
        for status in list(self.target.statuses):
            at = float(str(status.get("time", 0)))
            if at <= self._status_at:
                continue
            self._status_at = at
            change = (status.get("current"), status.get("desired"), status.get("reason"))
            if change[0] == change[1]:
                self._last_change = None  # a hold: not news, but the next change is
            elif change != self._last_change:  # a drain repeats its decision every cycle
                self._last_change = change
                text = f"{change[0]} → {change[1]}  {change[2]}: {status.get('message')}"
                self.marks.append(Mark(at - offset, "decision", text))
        for event in list(self.target.events):
            if event.at > self._event_at:
                self._event_at = event.at
                if event.warning and event.reason not in DRAIN_EVENTS:  # chaos kills, restarts…
                    text = f"{event.reason}: {event.message}"
                    self.marks.append(Mark(event.at - offset, event.reason, text))
        counts = self.drain_counts()
        for outcome, text in DRAIN_OUTCOMES.items():
            new = counts.get(outcome, 0) - self._drains.get(outcome, 0)
            self.marks += [Mark(now_s, outcome, text)] * max(0, new)
            self._drains[outcome] = counts.get(outcome, 0)
        return [f"t={m.t_s:.1f}s  {m.text}" for m in self.marks[-HISTORY_SHOWN:]]


def plain_line(s: Sample, produced: int, planned: int | None = None) -> str:
    """One line per sample for a log or a pipe."""
    states: dict[str, int] = {}
    for row in s.replicas:
        states[row.state] = states.get(row.state, 0) + 1
    shown = ",".join(f"{k}:{v}" for k, v in sorted(states.items())) or "-"
    last = s.decisions[-1].split("  ", 1)[-1].split(":")[0] if s.decisions else "-"
    return (
        f"t={s.t_s:5.1f}s backlog={s.backlog} in_flight={s.in_flight} "
        f"processed={s.processed}/{planned or produced} produced={produced} "
        f"rate={s.rate_per_s:.1f}/s dead={s.dead} "
        f"replicas={s.current} desired={s.desired if s.desired is not None else '-'} "
        f"states={shown} last={last}"
    )


def render(
    s: Sample, produced: int, title: str, max_replicas: int, planned: int | None = None
) -> Group:
    """The live terminal view of one sample; ``planned``: the messages the run will push
    (a fixed denominator; None with ``--forever``, where only ``produced`` is known)."""
    head = Text.assemble((title, "bold"), f"   t={s.t_s:.0f}s")
    bar_width = 40
    total = planned or produced
    scale = max(1, max(total, s.backlog))
    bar = "█" * min(bar_width, round(bar_width * s.backlog / scale))
    numbers = Table.grid(padding=(0, 2))
    for label, value in (
        ("backlog", f"{s.backlog:>5} {bar}"),
        ("in flight", f"{s.in_flight:>5}"),
        ("processed", f"{s.processed:>5} / {total}   {s.rate_per_s:5.1f}/s"),
        ("produced", f"{produced:>5} / {total}"),
        ("dead-lettered", f"{s.dead:>5}"),
        (
            "replicas",
            f"{s.current:>5} current   {s.desired if s.desired is not None else '-'} desired"
            f"   (max {max_replicas})",
        ),
    ):
        numbers.add_row(Text(label, style="bold"), value)
    replicas = Table("replica", "state", "in flight", "restarts", box=None, padding=(0, 2))
    for row in s.replicas:
        style = STATE_STYLE.get(row.state, "red")
        replicas.add_row(
            row.name, Text(row.state, style=style), str(row.in_flight), str(row.restarts)
        )
    decisions = Text("\n".join(s.decisions) or "(none yet)", style="dim")
    return Group(
        head, numbers, Text(""), replicas, Text("\nwhat happened", style="bold"), decisions
    )


class Display:
    """A rich ``Live`` view on a terminal, else a plain line per second on ``out``."""

    def __init__(
        self, out: TextIO, *, live: bool, title: str, max_replicas: int,
        planned: int | None = None,
    ) -> None:  # fmt: skip
        self.out = out
        self.title = title
        self.max_replicas = max_replicas
        self.planned = planned
        self._live = Live(console=Console(file=out), auto_refresh=False) if live else None
        self._last_line_at = -math.inf

    def __enter__(self) -> Display:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()

    def show(self, sample: Sample, produced: int) -> None:
        if self._live is not None:
            self._live.update(render(sample, produced, self.title, self.max_replicas, self.planned))
            self._live.refresh()
        elif sample.t_s - self._last_line_at >= 1.0:
            self._last_line_at = sample.t_s
            print(plain_line(sample, produced, self.planned), file=self.out, flush=True)
