"""The policy's floors and KEDA-parity keys: schedule, Redis memory pressure, paused-replicas,
fallback-behavior — tables plus hypothesis invariants."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.annotations import spec_with
from autoscaler.policy import (
    Decision,
    PolicyState,
    Reading,
    Reason,
    RedisTrigger,
    ScalingSpec,
    decide,
    steady_candidate,
)
from autoscaler.policy.schedule import parse_schedule
from autoscaler.policy.spec import FallbackBehavior

REDIS = RedisTrigger(("jobs",), messages_per_replica=10)
WATCHED = RedisTrigger(("jobs",), messages_per_replica=10, memory_high=0.8, memory_low=0.6)
WORKDAY = parse_schedule("start=0 8 * * 1-5, end=0 18 * * 1-5, replicas=6")
MONDAY_0759 = dt.datetime(2026, 12, 7, 7, 59, tzinfo=dt.UTC).timestamp()
MONDAY_0800 = MONDAY_0759 + 60
MONDAY_1800 = dt.datetime(2026, 12, 7, 18, 0, tzinfo=dt.UTC).timestamp()


def q(backlog: float, ratio: float | None = None) -> Reading:
    return Reading.from_queue(backlog)._replace(memory_ratio=ratio)


def once(
    spec: ScalingSpec,
    current: int,
    reading: Reading,
    state: PolicyState | None = None,
    now: float = 1000.0,
    wall: float | None = None,
) -> tuple[Decision, PolicyState]:
    return decide(spec, current, [reading], state or PolicyState(), now, wall)


# ---- schedule ----------------------------------------------------------------------------


def test_schedule_scales_from_zero_before_the_load_arrives() -> None:
    spec = spec_with((REDIS,), schedule=WORKDAY)
    before, _ = once(spec, 0, q(0), wall=MONDAY_0759)
    assert (before.replicas, before.reason) == (0, Reason.INACTIVE)
    opened, _ = once(spec, 0, q(0), wall=MONDAY_0800)
    assert (opened.replicas, opened.reason, opened.active) == (6, Reason.ACTIVATED, True)
    assert "schedule floor 6" in opened.message


def test_schedule_floor_joins_the_triggers_and_the_max_wins() -> None:
    spec = spec_with((REDIS,), schedule=WORKDAY)
    held, _ = once(spec, 6, q(20), wall=MONDAY_0800 + 3600)  # load asks 2: the floor holds 6
    assert (held.replicas, held.reason) == (6, Reason.SCHEDULED_FLOOR)
    above, _ = once(spec, 6, q(90), wall=MONDAY_0800 + 3600)  # load asks 9: load wins
    assert (above.replicas, above.reason) == (9, Reason.SCALE_UP)


def test_schedule_window_closes_and_load_decides_again() -> None:
    spec = spec_with((REDIS,), schedule=WORKDAY, scale_down_stabilization_s=0.0, cooldown_s=0.0)
    closed, _ = once(spec, 6, q(0), wall=MONDAY_1800)
    assert closed.replicas == 0


def test_without_wall_time_there_is_no_floor() -> None:
    """A replay with no calendar (simulate without --start) sizes on load alone."""
    spec = spec_with((REDIS,), schedule=WORKDAY)
    assert once(spec, 0, q(0), wall=None)[0].replicas == 0


def test_scheduled_spec_is_never_steady() -> None:
    """Its floor moves with the clock: the loop must not skip its decision."""
    spec = spec_with((REDIS,), schedule=WORKDAY)
    decision, _ = once(spec, 0, q(0), wall=MONDAY_0759)
    assert not steady_candidate(spec, decision)
    assert steady_candidate(spec_with((REDIS,)), once(spec_with((REDIS,)), 0, q(0))[0])


# ---- memory pressure ---------------------------------------------------------------------


def test_memory_pressure_scales_up_by_the_rule_until_below_low() -> None:
    spec = spec_with((WATCHED,), scale_down_stabilization_s=0.0)
    up, state = once(spec, 2, q(10, ratio=0.85), now=0.0)  # backlog alone: 1
    assert (up.replicas, up.reason) == (12, Reason.REDIS_MEMORY_PRESSURE)  # +10 pods
    assert state.memory_pressure
    held, state = once(spec, 12, q(10, ratio=0.7), state, now=5.0)  # between: still pressure
    assert held.replicas >= 12 and state.memory_pressure
    relieved, state = once(spec, 12, q(10, ratio=0.6), state, now=30.0)  # at low: over
    assert not state.memory_pressure
    assert relieved.replicas == 1


def test_memory_below_high_without_pressure_changes_nothing() -> None:
    spec = spec_with((WATCHED,))
    decision, state = once(spec, 2, q(20, ratio=0.79))
    assert (decision.replicas, decision.reason) == (2, Reason.DESIRED_WITHIN_RANGE)
    assert not state.memory_pressure


def test_unknown_memory_keeps_the_pressure_as_it_was() -> None:
    spec = spec_with((WATCHED,))
    _, state = once(spec, 2, q(0, ratio=0.9))
    _, state = once(spec, 12, q(0, ratio=None), state, now=1005.0)
    assert state.memory_pressure


def test_memory_pressure_activates_a_workload_at_zero() -> None:
    spec = spec_with((WATCHED,))
    decision, _ = once(spec, 0, q(0, ratio=0.95))
    assert decision.replicas > 0 and decision.active


# ---- paused-replicas and fallback-behavior -----------------------------------------------


@pytest.mark.parametrize("current", [0, 3, 50])
def test_paused_replicas_holds_exactly_n(current: int) -> None:
    spec = spec_with((REDIS,), paused_replicas=3, paused=True)  # wins over paused
    decision, _ = once(spec, current, q(5000))
    assert (decision.replicas, decision.reason) == (3, Reason.PAUSED)


@pytest.mark.parametrize(
    ("behavior", "current", "expected"),
    [
        (FallbackBehavior.STATIC, 9, 4),  # exactly the fallback, even below current
        (FallbackBehavior.STATIC, 1, 4),
        (FallbackBehavior.CURRENT, 9, 9),
        (FallbackBehavior.CURRENT, 1, 1),
        (FallbackBehavior.CURRENT_IF_HIGHER, 9, 9),
        (FallbackBehavior.CURRENT_IF_HIGHER, 1, 4),
    ],
)
def test_fallback_behavior(behavior: FallbackBehavior, current: int, expected: int) -> None:
    spec = spec_with((REDIS,), fallback_replicas=4, failure_threshold=2, fallback_behavior=behavior)
    state = PolicyState(failures=1)
    decision, _ = once(spec, current, Reading.failed("down"), state)
    assert (decision.replicas, decision.reason) == (expected, Reason.FALLBACK_ACTIVE)


def test_fallback_keeps_a_healthy_triggers_higher_count() -> None:
    other = RedisTrigger(("other",), messages_per_replica=10)
    spec = spec_with(
        (REDIS, other), fallback_replicas=2, failure_threshold=1,
        fallback_behavior=FallbackBehavior.STATIC,
    )  # fmt: skip
    decision, _ = decide(spec, 5, [Reading.failed("down"), q(70)], PolicyState(), 0.0)
    assert (decision.replicas, decision.reason) == (7, Reason.FALLBACK_ACTIVE)


# ---- invariants --------------------------------------------------------------------------

ratios = st.one_of(st.none(), st.floats(0.0, 1.0))
watched_specs = st.builds(
    lambda high, gap, lo, span: spec_with(
        (RedisTrigger(("q",), 10.0, memory_high=high, memory_low=max(0.01, high - gap)),),
        min_replicas=lo,
        max_replicas=max(lo, 1) + span,
    ),
    st.floats(0.3, 0.95),
    st.floats(0.0, 0.3),
    st.integers(0, 3),
    st.integers(0, 40),
)


@settings(max_examples=300)
@given(watched_specs, st.lists(st.tuples(st.integers(0, 500), ratios), min_size=1, max_size=15))
def test_memory_hysteresis_and_bounds(
    spec: ScalingSpec, history: list[tuple[int, float | None]]
) -> None:
    """Pressure starts at high, lasts until low, holds on unknown; under pressure the count
    never falls; every change stays within [min, max]."""
    trigger = spec.redis_triggers[0]
    assert trigger.memory_high is not None and trigger.memory_low is not None
    state, current = PolicyState(), 1
    for i, (backlog, ratio) in enumerate(history):
        was = state.memory_pressure
        decision, state = decide(spec, current, [q(backlog, ratio)], state, i * 5.0)
        if ratio is None:
            assert state.memory_pressure == was
        elif ratio >= trigger.memory_high:
            assert state.memory_pressure
        elif ratio <= trigger.memory_low:
            assert not state.memory_pressure
        else:
            assert state.memory_pressure == was
        if state.memory_pressure:
            assert decision.replicas >= min(current, spec.max_replicas)
        if decision.replicas != current:
            assert spec.min_replicas <= decision.replicas <= spec.max_replicas
        current = decision.replicas


hours = st.integers(0, 23)


@settings(max_examples=200)
@given(
    hours, hours, st.integers(0, 30), st.integers(0, 500), st.integers(0, 7 * 24 * 60),
    st.integers(0, 40),
)  # fmt: skip
def test_schedule_floor_is_a_lower_bound_of_the_load_decision(
    start: int, end: int, floor: int, backlog: int, minute: int, current: int
) -> None:
    """With a window open, the result is at least min(floor, max) — and never below what the
    same spec without a schedule decides (the max wins)."""
    schedule = parse_schedule(f"start=0 {start} * * *, end=30 {end} * * *, replicas={floor}")
    plain = spec_with((REDIS,), max_replicas=20, cooldown_s=0.0)
    spec = spec_with((REDIS,), max_replicas=20, cooldown_s=0.0, schedule=schedule)
    wall = MONDAY_0759 + minute * 60.0
    open_floor = schedule.floor(dt.datetime.fromtimestamp(wall, dt.UTC))
    with_floor, _ = once(spec, current, q(backlog), now=0.0, wall=wall)
    without, _ = once(plain, current, q(backlog), now=0.0, wall=wall)
    assert with_floor.replicas >= without.replicas
    if current <= min(open_floor, 20):  # going up: the scale-up rule may cap the step
        assert with_floor.replicas >= min(open_floor, 20, max(current + 10, 2 * current))
    else:
        assert with_floor.replicas >= min(open_floor, 20)


@settings(max_examples=200)
@given(
    st.sampled_from(list(FallbackBehavior)), st.integers(0, 30), st.integers(0, 30),
    st.integers(1, 30),
)  # fmt: skip
def test_fallback_within_bounds_and_as_declared(
    behavior: FallbackBehavior, current: int, fallback: int, top: int
) -> None:
    spec = spec_with(
        (REDIS,), max_replicas=max(top, fallback), fallback_replicas=fallback,
        failure_threshold=1, fallback_behavior=behavior,
    )  # fmt: skip
    decision, _ = once(spec, current, Reading.failed("down"))
    assert decision.reason is Reason.FALLBACK_ACTIVE
    assert spec.min_replicas <= decision.replicas <= spec.max_replicas
    expected = {
        FallbackBehavior.STATIC: fallback,
        FallbackBehavior.CURRENT: current,
        FallbackBehavior.CURRENT_IF_HIGHER: max(current, fallback),
    }[behavior]
    assert decision.replicas == min(expected, spec.max_replicas)
