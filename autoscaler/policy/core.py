"""The pure scaling policy: (spec, current, readings, state, now) → (decision, state).

No I/O, no clock, no asyncio: the caller passes ``now`` (seconds on any monotonic clock)
and keeps the returned state. The steps follow the HPA (``replica_calculator.go`` for
sizing, ``horizontal.go`` for stabilization and rate rules) and KEDA (activation and
cooldown to zero, fallback on errors):

1. per trigger, a proposal: ``ceil(value / target)``, or the current count when
   ``|value / (target · current) − 1| ≤ tolerance``; the rate-aware mode replaces the
   Redis proposal once rates are known (``rate.py``); the workload takes the max;
2. activation: at zero, stay there while every trigger is at or below its activation
   level; leave zero as soon as one is above; go to zero only after ``cooldown``;
3. clamp to [min, max]; a scale-up is capped by the scale-up rule; a scale-down takes the
   highest recommendation of the stabilization window;
4. a trigger that cannot be read is unknown, never zero: hold the count (healthy triggers
   may still scale up), and after ``failure-threshold`` failures in a row hold what
   ``fallback-behavior`` says (``floors.fallback_count``);
5. floors join the proposals (the max wins): an open ``schedule`` window (computed from
   the wall time passed in, not from ``now``) and Redis memory pressure (``floors``);
   ``paused-replicas`` holds a fixed count and decides nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import NamedTuple

from autoscaler.policy.floors import fallback_count, memory_pressure, schedule_floor
from autoscaler.policy.rate import rate_proposal, update_rate
from autoscaler.policy.spec import RedisStreamTrigger, RedisTrigger, ScalingSpec, Trigger
from autoscaler.policy.state import Decision, PolicyState, Reading, Reason

# Queue triggers (lists, streams): their readings carry backlog and processed for the
# rate-aware mode.
QUEUE_TRIGGERS = (RedisTrigger, RedisStreamTrigger)


def proposal(trigger: Trigger, value: float, current: int, tolerance: float) -> int:
    """Replicas one trigger asks for (HPA AverageValue with its tolerance band)."""
    return _within_tolerance(
        math.ceil(value / trigger.target), current, tolerance, value / trigger.target
    )


def scale_up_limit(spec: ScalingSpec, current: int, state: PolicyState, now: float) -> int:
    """The most replicas allowed now by the scale-up rule (HPA ``calculateScaleUpLimit``)."""
    rule = spec.scale_up
    added = sum(n for at, n in state.scale_ups if at > now - rule.period_s)
    start = max(current - added, 0)
    by_percent = math.ceil(start * (1.0 + rule.max_percent / 100.0))
    return max(start + rule.max_pods, by_percent)


class _Sized(NamedTuple):
    wanted: int  # max over healthy triggers, after each one's tolerance band
    tolerated: bool  # the winner would have changed the count but for the tolerance band
    message: str
    floor: Reason | None = None  # a floor (schedule, memory pressure) won, not a trigger


def _size(
    spec: ScalingSpec, current: int, readings: Sequence[Reading], state: PolicyState
) -> _Sized:
    """The max over healthy triggers' proposals, and a message saying which one won."""
    best: _Sized | None = None
    for trigger, reading in zip(spec.triggers, readings, strict=True):
        if reading.value is None:
            continue
        raw = math.ceil(reading.value / trigger.target)
        text = f"{trigger.name} {reading.value:g} / {trigger.target:g} per replica → {raw}"
        if isinstance(trigger, QUEUE_TRIGGERS) and spec.target_drain_time_s is not None:
            by_rate = rate_proposal(state.rate, reading, spec.target_drain_time_s)
            if by_rate is not None:
                raw, text = by_rate
        wanted = _within_tolerance(raw, current, spec.tolerance, reading.value / trigger.target)
        if best is None or wanted > best.wanted:
            best = _Sized(wanted, wanted != raw, text)
    return best or _Sized(0, False, "no healthy trigger")


def _within_tolerance(raw: int, current: int, tolerance: float, exact: float) -> int:
    """Keep ``current`` when the load is within the band around it (HPA ``tolerance``)."""
    if current > 0 and _side_of_band(exact, current, tolerance) == 0:
        return current
    return raw


def _side_of_band(exact: float, current: int, tolerance: float) -> int:
    """-1 below the tolerance band around ``current`` (> 0), 0 inside, 1 above."""
    off = exact / current - 1.0
    if abs(off) <= tolerance + 1e-9:  # float edge of the band
        return 0
    return -1 if off < 0 else 1


def _stabilize(spec: ScalingSpec, current: int, wanted: int, state: PolicyState, now: float) -> int:
    """Scale down only to the highest recommendation of the window (HPA behaviour)."""
    if wanted >= current:
        return wanted
    window = [n for at, n in state.recommendations if at > now - spec.scale_down_stabilization_s]
    return min(current, max([wanted, *window]))


def decide(
    spec: ScalingSpec,
    current: int,
    readings: Sequence[Reading],
    state: PolicyState,
    now: float,
    wall_time: float | None = None,
) -> tuple[Decision, PolicyState]:
    """One cycle of the policy for one workload. ``readings`` align with ``spec.triggers``.

    ``wall_time`` (seconds since the epoch) places ``now`` in the calendar for the
    ``schedule`` floor; None: no schedule floor.
    """
    if len(readings) != len(spec.triggers):
        raise ValueError(f"{len(readings)} readings for {len(spec.triggers)} triggers")
    if spec.paused_replicas is not None or spec.paused:
        # decide nothing; ``active`` still says whether a trigger is above activation
        loaded = any(
            r.value is not None and r.value > t.activation
            for t, r in zip(spec.triggers, readings, strict=True)
        )
        if spec.paused_replicas is None:
            return Decision(current, current, Reason.PAUSED, "paused by annotation", loaded), state
        n = spec.paused_replicas
        message = f"paused at {n} replica{'' if n == 1 else 's'} by annotation"
        return Decision(n, current, Reason.PAUSED, message, loaded), state
    failed = [t.name for t, r in zip(spec.triggers, readings, strict=True) if r.value is None]
    scheduled = schedule_floor(spec, wall_time)
    pressure, pressure_why = memory_pressure(spec, readings, state.memory_pressure)
    active = (
        any(
            r.value is not None and r.value > t.activation
            for t, r in zip(spec.triggers, readings, strict=True)
        )
        or scheduled > 0
        or pressure
    )
    state = _remember_inputs(spec, current, readings, state, now, bool(failed), active, pressure)
    if not failed and not active and spec.min_replicas == 0:
        idle = _idle_decision(spec, current, state, now)
        if idle is not None:
            return idle, replace(state, recommendations=())
    sized = _size(spec, current, readings, state)
    if scheduled > sized.wanted:
        sized = _Sized(scheduled, False, f"schedule floor {scheduled}", Reason.SCHEDULED_FLOOR)
    if pressure_why is not None:
        step = scale_up_limit(spec, current, state, now)
        if step > sized.wanted:
            text = f"{pressure_why}: scale-up rule → {step}"
            sized = _Sized(step, False, text, Reason.REDIS_MEMORY_PRESSURE)
    floor = max(spec.min_replicas, 1 if (active or failed or current > 0) else 0)
    recommendation = min(max(sized.wanted, floor), spec.max_replicas)
    result, reason, message = _limit(spec, current, sized, recommendation, state, now)
    if sized.floor is not None and reason in _FLOOR_NAMES:
        reason = sized.floor
    if failed:
        healthy = len(failed) < len(spec.triggers) or sized.floor is not None
        result, reason, message = _on_failure(
            spec, current, result, state, failed, reason, message, healthy
        )
    if current == 0 and result > 0 and reason is not Reason.FALLBACK_ACTIVE:
        reason = Reason.ACTIVATED
    decision = Decision(result, current, reason, message, active or bool(failed), recommendation)
    return decision, _remember_output(spec, current, result, recommendation, state, now)


# Reasons a winning floor replaces with its own (the count is the floor's doing).
_FLOOR_NAMES = frozenset(
    {Reason.SCALE_UP, Reason.SCALE_UP_LIMIT, Reason.DESIRED_WITHIN_RANGE, Reason.SCALE_DOWN}
)


def _remember_inputs(
    spec: ScalingSpec,
    current: int,
    readings: Sequence[Reading],
    state: PolicyState,
    now: float,
    failed: bool,
    active: bool,
    pressure: bool,
) -> PolicyState:
    since = state.inactive_since if state.inactive_since is not None else now
    inactive_since = None if (failed or active) else since
    rate = state.rate
    if spec.target_drain_time_s is not None:
        queue_readings = [
            r for t, r in zip(spec.triggers, readings, strict=True) if isinstance(t, QUEUE_TRIGGERS)
        ]
        if queue_readings:
            rate = update_rate(state.rate, queue_readings[0], current, now)
    failures = state.failures + 1 if failed else 0
    # PolicyState(...), not dataclasses.replace: ~1 µs instead of ~5 per call, two calls
    # per decided workload (~8% of a moving cycle at 10,000, docs/performance.md)
    return PolicyState(
        recommendations=state.recommendations,
        scale_ups=state.scale_ups,
        inactive_since=inactive_since,
        failures=failures,
        rate=rate,
        memory_pressure=pressure,
    )


def _idle_decision(
    spec: ScalingSpec, current: int, state: PolicyState, now: float
) -> Decision | None:
    """Every trigger at or below activation, min 0: stay at zero, or go there after cooldown."""
    if current == 0:
        return Decision(0, 0, Reason.INACTIVE, "every trigger at or below activation", False, 0)
    since = state.inactive_since if state.inactive_since is not None else now
    if now - since >= spec.cooldown_s:
        message = f"inactive for {now - since:g}s ≥ cooldown {spec.cooldown_s:g}s"
        return Decision(0, current, Reason.SCALE_TO_ZERO, message, False, 0)
    return None


def _limit(
    spec: ScalingSpec,
    current: int,
    sized: _Sized,
    recommendation: int,
    state: PolicyState,
    now: float,
) -> tuple[int, Reason, str]:
    """Apply the scale-up rule and scale-down stabilization; name what decided."""
    message = sized.message
    if recommendation > current:
        limit = max(scale_up_limit(spec, current, state, now), spec.min_replicas)
        if recommendation > limit:
            rule = spec.scale_up
            why = f"+{rule.max_pods} pods or +{rule.max_percent:g}% per {rule.period_s:g}s"
            return limit, Reason.SCALE_UP_LIMIT, f"{message}; capped at {limit} ({why})"
    result = _stabilize(spec, current, recommendation, state, now)
    if result > recommendation:
        window = spec.scale_down_stabilization_s
        held = f"holding {result}, the highest recommendation of the last {window:g}s"
        return result, Reason.SCALE_DOWN_STABILIZED, f"{message}; {held}"
    if sized.wanted > spec.max_replicas:
        return result, Reason.TOO_MANY_REPLICAS, f"{message}; capped at max {spec.max_replicas}"
    if sized.wanted < recommendation == spec.min_replicas:
        return result, Reason.TOO_FEW_REPLICAS, f"{message}; raised to min {spec.min_replicas}"
    if result == current:
        reason = Reason.WITHIN_TOLERANCE if sized.tolerated else Reason.DESIRED_WITHIN_RANGE
        return result, reason, message
    return result, Reason.SCALE_UP if result > current else Reason.SCALE_DOWN, message


def _on_failure(
    spec: ScalingSpec,
    current: int,
    result: int,
    state: PolicyState,
    failed: list[str],
    reason: Reason,
    message: str,
    healthy: bool,
) -> tuple[int, Reason, str]:
    """Never scale down on an error; past the threshold hold what the fallback says."""
    names = ", ".join(failed)
    if spec.fallback_replicas is not None and state.failures >= spec.failure_threshold:
        held = fallback_count(spec, current, result if healthy else 0)
        text = (
            f"{names} failing {state.failures} times in a row; fallback "
            f"{spec.fallback_behavior} {spec.fallback_replicas} → {held}"
        )
        return held, Reason.FALLBACK_ACTIVE, text
    if result >= current and reason in (Reason.SCALE_UP, Reason.SCALE_UP_LIMIT):
        return result, reason, f"{message}; {names} unknown"
    return max(result, current), Reason.METRIC_ERROR, f"{names} unknown: holding {current}"


def _remember_output(
    spec: ScalingSpec,
    current: int,
    result: int,
    recommendation: int,
    state: PolicyState,
    now: float,
) -> PolicyState:
    window_start = now - spec.scale_down_stabilization_s
    # Only what can still be the window's highest: an entry no later and no higher than
    # this one leaves the window no later and never wins ``_stabilize``'s max. The window
    # stays a few entries (times rising, counts falling) instead of one per cycle, and is
    # the same whether skipped cycles are recorded one by one or once (``note_steady``).
    recommendations = [
        p
        for p in state.recommendations
        if p[0] > window_start and (p[0] > now or p[1] > recommendation)
    ]
    recommendations.append((now, recommendation))
    period_start = now - spec.scale_up.period_s
    scale_ups = [p for p in state.scale_ups if p[0] > period_start]
    if result > current:
        scale_ups.append((now, result - current))
    return PolicyState(  # see _remember_inputs: not replace()
        recommendations=tuple(recommendations),
        scale_ups=tuple(scale_ups),
        inactive_since=state.inactive_since,
        failures=state.failures,
        rate=state.rate,
        memory_pressure=state.memory_pressure,
    )


# Reasons whose result equals the current count for as long as the readings don't change,
# whatever the time: the loop may skip ``decide`` for such a workload (see ``steady``).
_TIME_INDEPENDENT = frozenset(
    {
        Reason.DESIRED_WITHIN_RANGE,
        Reason.WITHIN_TOLERANCE,
        Reason.TOO_FEW_REPLICAS,
        Reason.TOO_MANY_REPLICAS,
        Reason.INACTIVE,
        Reason.PAUSED,
    }
)


def steady(
    spec: ScalingSpec,
    previous: Decision | None,
    previous_readings: list[Reading] | None,
    readings: list[Reading],
    current: int,
) -> bool:
    """Would ``decide`` return ``previous`` again, changing nothing but the time?

    True only for a no-change decision whose reason does not depend on time, with the same
    current count and the same readings, outside the rate-aware mode (whose estimates move
    with time even on equal readings). The caller then skips ``decide`` and, before the
    next real one, records the skipped recommendation with ``note_steady`` — which keeps
    the stabilization window exactly as if every cycle had been decided: the skipped
    recommendations are all equal, and the latest one is the last to leave the window.
    At 10,000 workloads this is most of a quiet cycle's CPU.
    """
    return (
        steady_candidate(spec, previous)
        and previous is not None
        and previous.current == current
        and previous_readings == readings
    )


def steady_candidate(spec: ScalingSpec, previous: Decision | None) -> bool:
    """The part of ``steady`` known as soon as ``previous`` is decided.

    ``steady(spec, previous, previous_readings, readings, current)`` is exactly
    ``steady_candidate(spec, previous) and previous.current == current and
    previous_readings == readings`` (property-tested): the loop evaluates this part once
    per decision, and each later cycle compares only the count and the readings.
    """
    return (
        previous is not None
        and previous.reason in _TIME_INDEPENDENT
        and previous.replicas == previous.current
        and spec.target_drain_time_s is None
        and spec.schedule is None  # its floor moves with the clock
        # idle above zero with min 0: the cooldown clock is running
        and (previous.active or previous.current == 0 or spec.min_replicas > 0)
    )


def note_steady(
    spec: ScalingSpec, state: PolicyState, at: float, decision: Decision
) -> PolicyState:
    """The state ``decide`` would have left had it run for every cycle skipped since
    ``decision`` (``steady``, or within its ``band``), the last of them at ``at``.

    Exactly, not approximately (property-tested): in such a cycle ``decide`` changes the
    state only through ``_remember_output`` — the same recommendation and replicas again,
    the windows trimmed to ``at`` — and an entry no later and no higher than the newest
    one is dropped, so recording the last skipped cycle is recording them all. Paused and
    idle-at-zero decisions record nothing.
    """
    if decision.reason in (Reason.PAUSED, Reason.INACTIVE) or decision.recommendation is None:
        return state
    return _remember_output(
        spec, decision.current, decision.replicas, decision.recommendation, state, at
    )


# ---- within a band: the readings moved, the decision cannot ------------------------------

# No-change reasons that, at the same current count, depend on the readings only through
# each trigger's ``_atoms`` — never on the clock or the windows; their recommendation is
# the current count.
_BANDED = frozenset(
    {
        Reason.DESIRED_WITHIN_RANGE,
        Reason.WITHIN_TOLERANCE,
        Reason.TOO_FEW_REPLICAS,
        Reason.TOO_MANY_REPLICAS,
    }
)
_LIMIT = 2.0**53  # values beyond are in no band (``decide`` raises on an infinite one)
_NUDGES = 8  # ulps an estimated edge may be moved to land inside the band


class Band(NamedTuple):
    """Where a decision holds: ``values``, per trigger, the closed interval of its
    values; ``until``, the last ``now`` it holds at (inf: for ever)."""

    values: tuple[tuple[float, float], ...]
    until: float


def band(
    spec: ScalingSpec, decision: Decision, readings: Sequence[Reading], state: PolicyState
) -> Band | None:
    """Per trigger, the values around ``readings``' for which ``decide`` gives
    ``decision`` again at any later time up to ``until`` while the current count is
    unchanged — same replicas, reason, activity and recommendation; only the message,
    which quotes the values, would differ — or None when no such promise can be made.
    ``state`` is what ``decide`` returned with ``decision``.

    The loop skips ``decide`` for readings ``within`` the band and records the skipped
    cycles with ``note_steady`` before the next real decision; the decisions and the state
    are then exactly ``decide``'s (property-tested). At 10,000 busy workloads whose queues
    move without changing their decisions this is most of a cycle's CPU
    (docs/performance.md, goal 1).

    Which decisions: no change (replicas = current > 0), every trigger read, for a
    reason in ``_BANDED`` (for ever), or held by the stabilization window
    (ScaleDownStabilized: until the window's last entry at or above the current count
    leaves it, ``_held_until``); active or with min-replicas above 0 (idle above zero
    with min 0 runs the cooldown clock); outside the rate-aware mode, schedules and
    memory watermarks (their inputs move with the clock or with other fields of a
    reading).

    Why an interval: such a decision sees each value only through ``_atoms`` — what the
    trigger wants, whether (and from which side) the tolerance band decided it, above
    activation or not — and the values with the same atoms form an interval (see
    ``_value_band``), so two ends with the same atoms prove the whole interval.
    """
    held = decision.reason is Reason.SCALE_DOWN_STABILIZED
    if (
        not (held or decision.reason in _BANDED)
        or not decision.replicas == decision.current > 0
        or decision.recommendation is None
        or (
            decision.recommendation >= decision.current
            if held
            else decision.recommendation != decision.current
        )
        or not (decision.active or spec.min_replicas > 0)
        or state.memory_pressure
        or spec.target_drain_time_s is not None
        or spec.schedule is not None
        or spec.paused
        or spec.paused_replicas is not None
        or any(isinstance(t, RedisTrigger) and t.memory_high is not None for t in spec.triggers)
    ):
        return None
    out = []
    for trigger, reading in zip(spec.triggers, readings, strict=True):
        value = reading.value
        if value is None or not -_LIMIT <= value <= _LIMIT:  # NaN too
            return None
        out.append(_value_band(trigger, value, decision.current, spec.tolerance))
    until = _held_until(spec, decision.current, state) if held else math.inf
    return Band(tuple(out), until)


def within(band: Band, readings: Sequence[Reading], now: float) -> bool:
    """``now`` no later than ``band.until``, every reading's value known and inside
    its trigger's interval."""
    if now > band.until:
        return False
    for (low, high), reading in zip(band.values, readings, strict=True):
        value = reading.value
        if value is None or not low <= value <= high:
            return False
    return True


def _held_until(spec: ScalingSpec, current: int, state: PolicyState) -> float:
    """The last ``now`` at which the window still has an entry at or above ``current``
    (so ``_stabilize`` holds the count), by ``_stabilize``'s own arithmetic: ``at >
    now - window``; -inf when none is."""
    window = spec.scale_down_stabilization_s
    at = max((at for at, n in state.recommendations if n >= current), default=None)
    if at is None:
        return -math.inf
    until = at + window
    for _ in range(_NUDGES):
        if at > until - window:  # decide's test (``_stabilize``), at the end itself
            return until
        until = math.nextafter(until, -math.inf)
    return -math.inf


def _atoms(trigger: Trigger, value: float, current: int, tolerance: float) -> tuple[object, ...]:
    """All a ``_BANDED`` decision sees of one value, computed as ``_size`` computes it:
    the replicas the trigger wants; whether the tolerance band decided them, and from
    which side of ``current`` (None: it did not); above activation or not."""
    exact = value / trigger.target
    raw = math.ceil(exact)
    wanted = _within_tolerance(raw, current, tolerance, exact)
    return wanted, None if wanted == raw else raw < current, value > trigger.activation


def _value_band(
    trigger: Trigger, value: float, current: int, tolerance: float
) -> tuple[float, float]:
    """The interval of values with ``value``'s atoms: its ends estimated from the
    formulas, then each moved (by a few ulps at most) until its atoms are ``value``'s.

    The atoms' sets are intervals: ``raw`` = ceil(value / target) is monotone in the
    value (a float division by a positive number is), the tolerance band around
    ``current`` is an interval of values with ``raw`` ≤ current below it and > current
    above it, and activation splits the values in two.
    """
    target, atoms = trigger.target, _atoms(trigger, value, current, tolerance)
    _, tolerated_from_below, active = atoms
    raw = math.ceil(value / target)
    below = target * current * (1.0 - tolerance - 1e-9)  # the tolerance band's ends
    above = target * current * (1.0 + tolerance + 1e-9)
    if tolerated_from_below is None:  # wanted = raw: one raw, on this side of the band
        lows, highs = [(raw - 1) * target], [raw * target]
        if raw < current:
            highs.append(below)
        elif raw > current:
            lows.append(above)
    else:  # wanted = current, inside the band, raw below (or above) current
        lows, highs = [below], [above]
        if tolerated_from_below:
            highs.append((current - 1) * target)  # raw ≤ current - 1
        else:
            lows.append(current * target)  # raw ≥ current + 1
    (lows if active else highs).append(trigger.activation)
    ends = []
    for edge in (max(-_LIMIT, *lows), min(_LIMIT, *highs)):
        for _ in range(_NUDGES):
            if _atoms(trigger, edge, current, tolerance) == atoms:
                break
            edge = math.nextafter(edge, value)
        else:
            edge = value
        ends.append(edge)
    return min(ends[0], value), max(ends[1], value)
