"""The pure policy: tables pinning the HPA/KEDA behaviour, and hypothesis invariants."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from autoscaler.annotations import spec_with
from autoscaler.policy import (
    Decision,
    PolicyState,
    PrometheusTrigger,
    Reading,
    Reason,
    RedisTrigger,
    ScaleUpRule,
    ScalingSpec,
    Trigger,
    band,
    decide,
    note_steady,
    steady,
    steady_candidate,
    within,
)

REDIS = RedisTrigger(("jobs",), messages_per_replica=10)
SPEC = spec_with((REDIS,))


def q(backlog: float, in_flight: float = 0, processed: float | None = None) -> Reading:
    return Reading.from_queue(backlog, in_flight, processed)


def one(
    spec: ScalingSpec,
    current: int,
    reading: Reading,
    state: PolicyState | None = None,
    now: float = 1000.0,
) -> tuple[int, Reason, PolicyState]:
    decision, new_state = decide(spec, current, [reading], state or PolicyState(), now)
    return decision.replicas, decision.reason, new_state


@pytest.mark.parametrize(
    ("current", "backlog", "in_flight", "expected", "reason"),
    [
        (1, 30, 0, 3, Reason.SCALE_UP),  # ceil(30/10)
        (1, 31, 0, 4, Reason.SCALE_UP),
        (2, 21, 0, 2, Reason.WITHIN_TOLERANCE),  # 21/20 = 1.05 ≤ 1.1
        (2, 23, 0, 3, Reason.SCALE_UP),  # 1.15 > 1.1
        (4, 40, 0, 4, Reason.DESIRED_WITHIN_RANGE),
        (1, 5, 5, 1, Reason.DESIRED_WITHIN_RANGE),  # in-flight counts
        (1, 100, 0, 10, Reason.SCALE_UP),
        (1, 300, 0, 11, Reason.SCALE_UP_LIMIT),  # +10 pods (or +100%) per period
        (12, 300, 0, 24, Reason.SCALE_UP_LIMIT),  # +100% of 12 beats +10
        (0, 1, 0, 1, Reason.ACTIVATED),
        (0, 0, 0, 0, Reason.INACTIVE),
        (50, 5000, 0, 100, Reason.TOO_MANY_REPLICAS),
    ],
)
def test_sizing_table(
    current: int, backlog: int, in_flight: int, expected: int, reason: Reason
) -> None:
    assert one(SPEC, current, q(backlog, in_flight))[:2] == (expected, reason)


def test_in_flight_ignored_when_not_counted() -> None:
    spec = replace(SPEC, triggers=(replace(REDIS, count_in_flight=False),))
    reading = Reading.from_queue(0, 50, count_in_flight=False)
    assert one(spec, 0, reading)[:2] == (0, Reason.INACTIVE)


def test_min_replicas_floor() -> None:
    spec = replace(SPEC, min_replicas=3)
    assert one(spec, 3, q(0))[:2] == (3, Reason.TOO_FEW_REPLICAS)
    assert one(spec, 0, q(0))[:2] == (3, Reason.ACTIVATED)


def test_max_over_triggers() -> None:
    prom = PrometheusTrigger("x", target=2)
    spec = replace(SPEC, triggers=(REDIS, prom), scale_up=replace(SPEC.scale_up, max_pods=100))
    decision, _ = decide(spec, 1, [q(30), Reading(value=14.0)], PolicyState(), 0)
    assert decision.replicas == 7 and "prometheus" in decision.message


def test_activation_threshold() -> None:
    spec = replace(SPEC, triggers=(replace(REDIS, activation_messages=5),))
    assert one(spec, 0, q(5))[:2] == (0, Reason.INACTIVE)
    assert one(spec, 0, q(6))[:2] == (1, Reason.ACTIVATED)


def test_scale_to_zero_only_after_cooldown() -> None:
    spec = replace(SPEC, cooldown_s=120, scale_down_stabilization_s=0)
    replicas, reason, state = one(spec, 2, q(0), now=0)
    assert (replicas, reason) == (1, Reason.SCALE_DOWN)
    replicas, reason, state = one(spec, 1, q(0), state, now=119)
    assert replicas == 1
    replicas, reason, state = one(spec, 1, q(0), state, now=120)
    assert (replicas, reason) == (0, Reason.SCALE_TO_ZERO)
    # Any activity restarts the cooldown.
    _, _, state = one(spec, 1, q(1), state, now=200)
    replicas, _, state = one(spec, 1, q(0), state, now=201)
    assert replicas == 1
    assert one(spec, 1, q(0), state, now=320)[0] == 1
    assert one(spec, 1, q(0), state, now=321)[0] == 0


def test_scale_down_stabilization_takes_highest_recent_recommendation() -> None:
    spec = replace(SPEC, scale_down_stabilization_s=60, min_replicas=1)
    _, _, state = one(spec, 8, q(80), now=0)
    replicas, reason, state = one(spec, 8, q(20), state, now=30)
    assert (replicas, reason) == (8, Reason.SCALE_DOWN_STABILIZED)
    replicas, reason, state = one(spec, 8, q(20), state, now=61)
    assert (replicas, reason) == (2, Reason.SCALE_DOWN)


def test_scale_up_rule_counts_earlier_steps_in_the_period() -> None:
    spec = replace(SPEC, scale_up=ScaleUpRule(max_pods=4, max_percent=0.0001, period_s=15))
    replicas, _, state = one(spec, 1, q(1000), now=0)
    assert replicas == 5
    replicas, reason, state = one(spec, 5, q(1000), state, now=5)
    assert (replicas, reason) == (5, Reason.SCALE_UP_LIMIT)  # period start is still 1
    assert one(spec, 5, q(1000), state, now=15.5)[0] == 9


def test_error_holds_and_never_reads_as_zero() -> None:
    replicas, reason, state = one(SPEC, 4, Reading.failed("boom"))
    assert (replicas, reason) == (4, Reason.METRIC_ERROR)
    assert state.failures == 1
    assert one(SPEC, 0, Reading.failed("boom"))[0] == 1  # unknown is not idle


def test_fallback_after_threshold() -> None:
    spec = replace(SPEC, fallback_replicas=6, failure_threshold=3)
    state = PolicyState()
    for expected_reason in (Reason.METRIC_ERROR, Reason.METRIC_ERROR, Reason.FALLBACK_ACTIVE):
        replicas, reason, state = one(spec, 2, Reading.failed("down"), state)
        assert reason == expected_reason
    assert replicas == 6
    assert one(spec, 9, Reading.failed("down"), state)[0] == 9  # never lowers
    assert one(spec, 6, q(0), state)[2].failures == 0


def test_healthy_trigger_can_still_scale_up_while_another_fails() -> None:
    spec = replace(SPEC, triggers=(REDIS, PrometheusTrigger("x", 1)))
    decision, _ = decide(spec, 1, [q(40), Reading.failed("prom down")], PolicyState(), 0)
    assert decision.replicas == 4 and decision.reason == Reason.SCALE_UP


def test_paused_changes_nothing() -> None:
    assert one(replace(SPEC, paused=True), 3, q(1000))[:2] == (3, Reason.PAUSED)


def test_rate_aware_mode_sizes_for_target_drain_time() -> None:
    spec = replace(
        SPEC,
        target_drain_time_s=60,
        scale_up=replace(SPEC.scale_up, max_pods=100),
        tolerance=0.0,
        scale_down_stabilization_s=0,
    )
    state = PolicyState()
    # 4 replicas each finishing 2 msg/s; 10 msg/s arriving; backlog grows by 2/s.
    backlog, processed = 600.0, 0.0
    for t in range(0, 50, 5):
        decision, state = decide(spec, 4, [q(backlog, 0, processed)], state, float(t))
        backlog += 2 * 5
        processed += 8 * 5
    assert state.rate is not None
    assert state.rate.service_rate == pytest.approx(2.0)
    assert state.rate.arrival_rate == pytest.approx(10.0)
    # λ/μ = 5, backlog 680/(2·60) = 5.67 → ceil(10.67) = 11
    assert decision.replicas == 11 and "rate-aware" in decision.message


def test_rate_aware_falls_back_until_rates_known() -> None:
    spec = replace(SPEC, target_drain_time_s=60)
    decision, _ = decide(spec, 1, [q(30, 0, 0)], PolicyState(), 0)
    assert decision.replicas == 3 and "rate-aware" not in decision.message


# ---- invariants -----------------------------------------------------------------------

specs = st.builds(
    lambda mpr, lo, span, tol, act, stab, cool: spec_with(
        (RedisTrigger(("q",), mpr, activation_messages=act),),
        min_replicas=lo,
        max_replicas=max(lo, 1) + span,
        tolerance=tol,
        scale_down_stabilization_s=stab,
        cooldown_s=cool,
    ),
    st.integers(1, 100).map(float),
    st.integers(0, 5),
    st.integers(0, 50),
    st.sampled_from([0.0, 0.1, 0.3]),
    st.integers(0, 20).map(float),
    st.sampled_from([0.0, 30.0, 300.0]),
    st.sampled_from([0.0, 60.0]),
)
histories = st.lists(st.tuples(st.integers(0, 5000), st.booleans()), min_size=1, max_size=12)


def run(
    spec: ScalingSpec, history: list[tuple[int, bool]], start: int
) -> list[tuple[int, int, Reason, int]]:
    """Feed a history of (backlog, ok) every 5 s; returns (current, result, reason, backlog)."""
    state, current, out = PolicyState(), start, []
    for i, (backlog, ok) in enumerate(history):
        reading = q(backlog) if ok else Reading.failed("x")
        decision, state = decide(spec, current, [reading], state, i * 5.0)
        out.append((current, decision.replicas, decision.reason, backlog))
        current = decision.replicas
    return out


@settings(max_examples=300)
@given(specs, histories, st.integers(0, 60))
def test_result_within_bounds(
    spec: ScalingSpec, history: list[tuple[int, bool]], start: int
) -> None:
    for current, result, _, _ in run(spec, history, start):
        if result != current:
            assert spec.min_replicas <= result <= spec.max_replicas or result == 0


@settings(max_examples=300)
@given(specs, histories, st.integers(0, 60))
def test_never_zero_while_above_activation_and_errors_never_lower(
    spec: ScalingSpec, history: list[tuple[int, bool]], start: int
) -> None:
    for (current, result, _, backlog), (_, ok) in zip(
        run(spec, history, start), history, strict=True
    ):
        if not ok:
            assert result >= current
        elif backlog > spec.triggers[0].activation:
            assert result >= 1


@settings(max_examples=300)
@given(specs, st.integers(1, 60), st.integers(0, 5000), st.integers(0, 5000))
def test_monotone_in_backlog(spec: ScalingSpec, current: int, a: int, b: int) -> None:
    low, high = sorted((a, b))
    r_low = one(spec, current, q(low))[0]
    r_high = one(spec, current, q(high))[0]
    assert r_low <= r_high


@settings(max_examples=300)
@given(specs, st.integers(1, 60), st.floats(0.0, 1.0))
def test_no_change_inside_tolerance(spec: ScalingSpec, current: int, frac: float) -> None:
    current = min(max(current, spec.min_replicas, 1), spec.max_replicas)
    target = spec.triggers[0].target
    ratio = 1 - spec.tolerance + 2 * spec.tolerance * frac
    backlog = ratio * target * current
    if backlog <= spec.triggers[0].activation:
        return
    assert one(spec, current, q(backlog))[0] == current


@settings(max_examples=300)
@given(specs, histories)
def test_no_scale_down_within_window_after_higher_recommendation(
    spec: ScalingSpec, history: list[tuple[int, bool]]
) -> None:
    state, current, recs = PolicyState(), spec.min_replicas, []
    for i, (backlog, ok) in enumerate(history):
        now = i * 5.0
        reading = q(backlog) if ok else Reading.failed("x")
        decision, state = decide(spec, current, [reading], state, now)
        if decision.replicas < current and decision.reason is not Reason.SCALE_TO_ZERO:
            recent = [r for at, r in recs if at > now - spec.scale_down_stabilization_s]
            assert all(r <= decision.replicas for r in recent)
        if decision.recommendation is not None:
            recs.append((now, decision.recommendation))
        current = decision.replicas


@settings(max_examples=400)
@given(
    specs,
    histories,
    st.integers(0, 60),
    st.lists(st.sampled_from([1.0, 5.0, 40.0]), min_size=12, max_size=12),
)
def test_skipping_steady_cycles_changes_no_decision(
    spec: ScalingSpec, history: list[tuple[int, bool]], start: int, gaps: list[float]
) -> None:
    """The loop's shortcut (``steady`` + ``note_steady``) decides exactly as ``decide``."""
    history = [h for h in history for _ in range(2)]  # repeats make steady cycles likely
    full_state, lazy_state = PolicyState(), PolicyState()
    full_current = lazy_current = start
    previous: Decision | None = None
    previous_readings: list[Reading] | None = None
    skipped_at: float | None = None
    now = 0.0
    for i, (backlog, ok) in enumerate(history):
        now += gaps[i % len(gaps)]
        readings = [q(backlog) if ok else Reading.failed("x")]
        full, full_state = decide(spec, full_current, readings, full_state, now)
        is_steady = steady(spec, previous, previous_readings, readings, lazy_current)
        # the loop's split form: candidate once per decision, then count and readings
        assert is_steady == (
            steady_candidate(spec, previous)
            and previous is not None
            and previous.current == lazy_current
            and previous_readings == readings
        )
        if is_steady:
            assert previous is not None
            lazy, skipped_at = previous, now
        else:
            if skipped_at is not None and previous is not None:
                lazy_state = note_steady(spec, lazy_state, skipped_at, previous)
                skipped_at = None
            lazy, lazy_state = decide(spec, lazy_current, readings, lazy_state, now)
        assert lazy == full
        if skipped_at is not None:  # the state decide left = the skipped cycles recorded
            assert note_steady(spec, lazy_state, skipped_at, lazy) == full_state
        else:
            assert lazy_state == full_state
        previous, previous_readings = lazy, readings
        full_current = lazy_current = full.replicas


def substance(d: Decision) -> tuple[object, ...]:
    """A decision but its message (which quotes the readings)."""
    return (d.replicas, d.current, d.reason, d.active, d.recommendation)


# how a value moves from one cycle to the next (None: that read fails, the value stays)
steps = st.one_of(
    st.sampled_from([0.0, 1.0, -1.0, 0.5, -0.5, 1e-9, -1e-9, 4.0, -4.0]),
    st.floats(-3.0, 3.0),
    st.sampled_from([None, *[0.0] * 9]),  # a failed read now and then
)


# counts and values near zero and activation (idle, cooldown, zero replicas) often
counts = st.integers(0, 15) | st.integers(0, 2)
small_values = st.integers(0, 60).map(float) | st.integers(0, 5).map(float)


@st.composite
def banded_specs(draw: st.DrawFn) -> ScalingSpec:
    """One or two triggers (lists, Prometheus), sometimes watermarks or the rate mode."""
    mpr = float(draw(st.integers(1, 10)))
    act = float(draw(st.integers(0, 4)))
    watched = draw(st.booleans())
    redis = RedisTrigger(
        ("q",),
        mpr,
        activation_messages=act,
        memory_high=0.8 if watched else None,
        memory_low=0.6 if watched else None,
    )
    triggers: tuple[Trigger, ...] = (redis,)
    if draw(st.booleans()):
        triggers += (PrometheusTrigger("up", draw(st.sampled_from([0.5, 3.0, 7.0]))),)
    lo = draw(st.integers(0, 4))
    return spec_with(
        triggers,
        min_replicas=lo,
        max_replicas=max(lo, 1) + draw(st.integers(0, 12)),
        tolerance=draw(st.sampled_from([0.0, 0.1, 0.3])),
        scale_down_stabilization_s=draw(st.sampled_from([0.0, 30.0, 300.0])),
        cooldown_s=draw(st.sampled_from([0.0, 60.0])),
        target_drain_time_s=draw(st.sampled_from([None, None, None, 60.0])),
    )


@settings(max_examples=1000)
@given(
    banded_specs(),
    st.lists(
        st.tuples(
            st.lists(steps, min_size=2, max_size=2),
            st.sampled_from([1.0, 5.0, 40.0]),  # seconds since the last cycle
            st.sampled_from([None] * 9 + [0, 1, 4]),  # now and then moved by someone else
            st.sampled_from([None, 0.5, 0.9]),  # Redis memory ratio
        ),
        min_size=1,
        max_size=30,
    ),
    counts,
    st.lists(small_values, min_size=2, max_size=2),
)
def test_skipping_within_band_decides_and_remembers_as_decide(
    spec: ScalingSpec,
    cycles: list[tuple[list[float | None], float, int | None, float | None]],
    start: int,
    values: list[float],
) -> None:
    """The loop's shortcuts — ``steady`` (same readings) and ``band``/``within`` (the
    readings moved inside the band), each skipped cycle recorded with ``note_steady``
    before the next real decision — give ``decide``'s decisions (their message aside,
    which quotes the readings) and leave exactly ``decide``'s state."""
    full_state = lazy_state = PolicyState()
    current, now = start, 0.0
    previous: Decision | None = None
    previous_readings: list[Reading] | None = None
    bands = None
    skipped_at: float | None = None
    for moves, gap, moved, ratio in cycles:
        now += gap
        if moved is not None:
            current = moved
        values = [v if m is None else max(0.0, v + m) for v, m in zip(values, moves, strict=True)]
        readings = [
            Reading.failed("x")
            if m is None
            else Reading(v, v, 0.0, 100.0, consumers=1, memory_ratio=ratio)
            for v, m, _ in zip(values, moves, spec.triggers, strict=False)
        ]
        full, full_state = decide(spec, current, readings, full_state, now)
        skip = (
            previous is not None
            and previous.current == current
            and (
                steady(spec, previous, previous_readings, readings, current)
                or (bands is not None and within(bands, readings, now))
            )
        )
        if skip:
            assert previous is not None
            lazy, skipped_at = previous, now
            event("skipped: " + ("steady" if readings == previous_readings else "within band"))
        else:
            if skipped_at is not None and previous is not None:
                lazy_state = note_steady(spec, lazy_state, skipped_at, previous)
                skipped_at = None
            lazy, lazy_state = decide(spec, current, readings, lazy_state, now)
            assert lazy == full
            bands = band(spec, lazy, readings, lazy_state)
            previous = lazy
        previous_readings = readings
        assert substance(lazy) == substance(full)
        if skipped_at is not None:
            assert note_steady(spec, lazy_state, skipped_at, lazy) == full_state
        else:
            assert lazy_state == full_state
        current = full.replicas  # the loop scales to it


@settings(max_examples=1000)
@given(
    banded_specs(),
    counts,
    st.lists(small_values, min_size=2, max_size=2),  # a reading before
    st.lists(small_values | st.floats(0.0, 60.0), min_size=2, max_size=2),  # the decided one
    st.lists(st.sampled_from([0.0, 1.0, 0.5, 0.999999, 1e-9]), min_size=2, max_size=2),
    st.sampled_from([1.0, 30.0, 100.0, 1000.0]),
)
def test_band_holds_anywhere_inside_at_any_later_time(
    spec: ScalingSpec,
    current: int,
    before: list[float],
    decided: list[float],
    where: list[float],
    later: float,
) -> None:
    """Any value in the band (its ends included), any time later up to its end: ``decide``
    gives the decision again (but its message) and leaves what ``note_steady`` records."""
    first = [Reading(v) for v, _ in zip(before, spec.triggers, strict=False)]
    _, state = decide(spec, current, first, PolicyState(), 0.0)
    readings = [Reading(v) for v, _ in zip(decided, spec.triggers, strict=False)]
    decision, state = decide(spec, current, readings, state, 5.0)
    bands = band(spec, decision, readings, state)
    if bands is None:
        return
    inside = [
        Reading(low + f * (high - low)) for (low, high), f in zip(bands.values, where, strict=False)
    ]
    at = min(5.0 + later, bands.until)  # a window's hold ends
    assert within(bands, inside, at)
    again, after = decide(spec, current, inside, state, at)
    assert substance(again) == substance(decision)
    assert after == note_steady(spec, state, at, decision)


def test_band_holds_a_moving_queue_and_ends_at_the_next_replica() -> None:
    """Within tolerance at 2 replicas of 10 messages: 18..22 (±10%), and ceil(value / 10)
    is the same only within (20, 30]; on the edges the decision does change."""
    spec = spec_with((REDIS,))
    decision, state = decide(spec, 2, [q(21.5)], PolicyState(), 0.0)
    assert (decision.replicas, decision.reason) == (2, Reason.WITHIN_TOLERANCE)
    bands = band(spec, decision, [q(21.5)], state)
    assert bands is not None
    ((low, high),) = bands.values
    assert bands.until == math.inf
    assert 20 < low <= 20.000001 and 21.999999 < high <= 22.0 + 1e-6
    for v in (low, high):
        assert substance(decide(spec, 2, [q(v)], state, 9.0)[0]) == substance(decision)
    for v in (math.nextafter(low, 0), math.nextafter(high, 99)):
        assert substance(decide(spec, 2, [q(v)], state, 9.0)[0]) != substance(decision)


def test_a_band_held_by_the_window_ends_when_its_high_entry_leaves() -> None:
    """3 replicas recommended at 0 s hold 3 against a lower load until 0 + 60 s (the
    window), exactly: the last held ``now`` is in the band, the next float is not (then
    the 2 recommended at 5 s holds 2)."""
    spec = spec_with((REDIS,), min_replicas=1, scale_down_stabilization_s=60.0)
    _, state = decide(spec, 3, [q(30)], PolicyState(), 0.0)
    _, state = decide(spec, 3, [q(20)], state, 5.0)
    held, state = decide(spec, 3, [q(10)], state, 10.0)
    assert held.reason is Reason.SCALE_DOWN_STABILIZED
    bands = band(spec, held, [q(10)], state)
    assert bands is not None and 59.999 < bands.until < 60.0
    assert within(bands, [q(7)], bands.until)
    assert not within(bands, [q(7)], math.nextafter(bands.until, 99))
    assert decide(spec, 3, [q(7)], state, bands.until)[0].replicas == 3
    assert decide(spec, 3, [q(7)], state, math.nextafter(bands.until, 99))[0].replicas == 2


def test_no_band_where_the_cooldown_decides() -> None:
    """Idle above zero with min 0: the cooldown clock runs, no band."""
    spec = spec_with((REDIS,), min_replicas=0)
    cooling, state = decide(spec, 1, [q(0)], PolicyState(), 0.0)  # cooldown running
    assert (cooling.replicas, cooling.reason, cooling.active) == (
        1,
        Reason.DESIRED_WITHIN_RANGE,
        False,
    )
    assert band(spec, cooling, [q(0)], state) is None


@settings(max_examples=300)
@given(
    specs,
    st.booleans(),
    st.integers(0, 60),
    st.one_of(st.none(), st.integers(0, 60)),
    st.integers(0, 500),
    st.integers(0, 500),
    st.booleans(),
)
def test_steady_splits_into_candidate_count_and_readings(
    spec: ScalingSpec,
    rate_aware: bool,
    before: int,
    moved: int | None,
    a: int,
    b: int,
    ok: bool,
) -> None:
    """The loop checks ``steady_candidate`` once per decision, then only count and readings."""
    current = before if moved is None else moved  # None: the count did not move
    if rate_aware:
        spec = replace(spec, target_drain_time_s=60.0)
    previous_readings = [q(a) if ok else Reading.failed("x")]
    previous, _ = decide(spec, before, previous_readings, PolicyState(), 0.0)
    for prev in (None, previous):
        for readings in ([q(a)], [q(b)], previous_readings):
            assert steady(spec, prev, previous_readings, readings, current) == (
                steady_candidate(spec, prev)
                and prev is not None
                and prev.current == current
                and previous_readings == readings
            )


def test_rate_aware_counts_serving_consumers_not_starting_replicas() -> None:
    """μ per consumer alive: 8 requested replicas of which 2 serve at 2 msg/s each."""
    spec = replace(SPEC, target_drain_time_s=60)
    state = PolicyState()
    backlog, processed = 500.0, 0.0
    for t in range(0, 30, 5):
        reading = Reading.from_queue(backlog, 0, processed, consumers=2)
        _, state = decide(spec, 8, [reading], state, float(t))
        processed += 4 * 5
    assert state.rate is not None and state.rate.service_rate == pytest.approx(2.0)


def test_rate_aware_raises_an_underestimate_when_the_queue_runs_dry() -> None:
    spec = replace(SPEC, target_drain_time_s=60)
    first = Reading.from_queue(10, 0, 0, consumers=4)
    _, state = decide(spec, 4, [first], PolicyState(), 0.0)
    _, state = decide(spec, 4, [Reading.from_queue(10, 0, 4, consumers=4)], state, 10.0)
    assert state.rate is not None and state.rate.service_rate == pytest.approx(0.1)
    # The queue is empty now, yet each consumer did 1 msg/s: μ is at least that.
    _, state = decide(spec, 4, [Reading.from_queue(0, 0, 44, consumers=4)], state, 20.0)
    assert state.rate is not None and state.rate.service_rate == pytest.approx(1.0)
    # ...and an idle interval never lowers it.
    _, state = decide(spec, 4, [Reading.from_queue(0, 0, 45, consumers=4)], state, 30.0)
    assert state.rate.service_rate == pytest.approx(1.0)
