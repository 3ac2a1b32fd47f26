"""What joins the triggers' proposals besides load: scheduled floors and Redis memory pressure,
and what the fallback holds.

- *Schedule floor*: the highest ``replicas`` of the ``schedule`` windows open at the wall
  time passed in (``policy.schedule``). The policy's ``now`` may be a monotonic clock, so
  the caller passes wall time (seconds since the epoch) separately; without it there is no
  floor (a replay with no calendar).
- *Memory pressure*: a Redis trigger with watermarks is under pressure from the reading
  whose ``memory_ratio`` reaches ``memory_high`` until one falls to ``memory_low`` or
  below (hysteresis: the state remembers it). An unknown ratio keeps the previous answer.
  Under pressure the workload grows by the scale-up rule each cycle, even when the
  backlog alone would not: more consumers drain the lists that fill the memory.
- *Fallback* (``fallback-behavior``, KEDA's semantics): ``static`` holds
  ``fallback-replicas``, ``current`` the current count, ``current-if-higher`` the current
  count but at least ``fallback-replicas``; healthy triggers and floors still count.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence

from autoscaler.policy.schedule import Schedule
from autoscaler.policy.spec import FallbackBehavior, RedisTrigger, ScalingSpec
from autoscaler.policy.state import Reading


def schedule_floor(spec: ScalingSpec, wall_time: float | None) -> int:
    """Replicas the schedule asks for at ``wall_time`` (epoch seconds); 0 without one."""
    if spec.schedule is None or wall_time is None:
        return 0
    return _floor_in_minute(spec.schedule, int(wall_time // 60))


@functools.lru_cache(maxsize=4096)
def _floor_in_minute(schedule: Schedule, minute: int) -> int:
    """Crons have minute resolution, so the floor is constant within a minute: computed once
    per schedule and minute (a rare cron scans back up to a year: ~0.5 ms), however many
    workloads share the schedule and however often they are decided."""
    return schedule.floor(dt.datetime.fromtimestamp(minute * 60, dt.UTC))


def memory_pressure(
    spec: ScalingSpec, readings: Sequence[Reading], was: bool
) -> tuple[bool, str | None]:
    """(under pressure now, why) from the watched triggers' memory ratios."""
    pressure, why, known = was, None, False
    for trigger, reading in zip(spec.triggers, readings, strict=True):
        if not isinstance(trigger, RedisTrigger) or trigger.memory_high is None:
            continue
        ratio = reading.memory_ratio
        if ratio is None:
            continue
        low = trigger.memory_low if trigger.memory_low is not None else trigger.memory_high
        if ratio >= trigger.memory_high:
            return True, (
                f"{trigger.name} Redis memory {ratio:.0%} ≥ high watermark "
                f"{trigger.memory_high:.0%}"
            )
        if was and ratio > low:
            why = f"{trigger.name} Redis memory {ratio:.0%} still above low watermark {low:.0%}"
            return True, why
        known = True
    if known:
        pressure = False
    return pressure, why if pressure else None


def fallback_count(spec: ScalingSpec, current: int, others: int) -> int:
    """The count the fallback holds; ``others``: healthy triggers' and floors' proposal."""
    fallback = spec.fallback_replicas or 0
    behavior = spec.fallback_behavior
    if behavior is FallbackBehavior.STATIC:
        held = max(fallback, others)
    elif behavior is FallbackBehavior.CURRENT:
        held = max(current, others)
    else:
        held = max(current, fallback, others)
    return min(max(held, spec.min_replicas), spec.max_replicas)
