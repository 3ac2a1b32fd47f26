"""The compact forms kept per workload for the status annotation give what the full forms
gave (docs/performance.md, goal 5).

- ``KubeTarget`` keeps a fingerprint of the status last written (``_digest``) and its
  conditions' transition times (``_transitions``) instead of the parsed document: the
  fingerprints are equal exactly when the documents are ``==`` (the former comparison),
  and the transitions kept give what the former ``_kept_transitions`` read of the whole
  document.
- ``Reporter`` shares the (status, lastTransitionTime) tuples made in the same second
  and keeps a pending status as its inputs (``_Status``): the same document as before.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from autoscaler.annotations import ANNOTATION_PREFIX, parse_spec
from autoscaler.controller.report import (
    CONDITIONS,
    Reporter,
    _failing,
    _iso,
    _Status,
    conditions_of,
)
from autoscaler.controller.workload import status_of
from autoscaler.policy import Decision, Reading, Reason, ScalingSpec
from autoscaler.targets.kubernetes import (
    _comparable,
    _digest,
    _kept_transitions,
    _shared_transitions,
    _transitions,
)

# JSON values from a small alphabet, so that independent draws are often equal; numbers
# that are == across types (1, 1.0, True; 0, -0.0, False), NaN (json gives one NaN
# object: parsed documents with NaN at the same places are ==) and infinities.
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-2, 2),
    st.sampled_from([0.0, -0.0, 1.0, 2.0, 0.5, 1e16, float("inf"), float("-inf"), float("nan")]),
    st.just(10**16),
    st.sampled_from(["", "a", "True", "1", "\u2192", "\ud800"]),
)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "time", "c"]), inner, max_size=3)
    ),
    max_leaves=8,
)


def _roundtrip(value: Any) -> Any:
    return json.loads(json.dumps(value))


@settings(max_examples=2000, deadline=None)
@given(_json, _json)
def test_fingerprints_are_equal_exactly_when_the_documents_are(a: Any, b: Any) -> None:
    # two documents (objects) as write_status compares them: each parsed apart
    left, right = _roundtrip({"v": a}), _roundtrip({"v": b})
    assert (_digest(left) == _digest(right)) == (left == right)


@settings(max_examples=500, deadline=None)
@given(_json, st.data())
def test_equal_documents_in_other_spellings_have_one_fingerprint(
    a: Any, data: st.DataObject
) -> None:
    def respelled(value: Any) -> Any:  # == to value: keys reordered, numbers re-typed
        if isinstance(value, dict):
            keys = data.draw(st.permutations(list(value)))
            return {k: respelled(value[k]) for k in keys}
        if isinstance(value, list):
            return [respelled(v) for v in value]
        if isinstance(value, bool | int) and value in (0, 1):
            return data.draw(st.sampled_from([value, float(value), bool(value)]))
        return value

    left, right = _roundtrip({"v": a}), _roundtrip({"v": respelled(a)})
    assert left == right
    assert _digest(left) == _digest(right)


def _former_kept_transitions(status: Mapping[str, Any], last: Any) -> Mapping[str, Any]:
    """``_kept_transitions`` as it was, reading the whole last document (the slow path)."""
    conditions = status.get("conditions")
    if not isinstance(last, dict) or not isinstance(conditions, list):
        return status
    before = {
        (c.get("type"), c.get("status")): c.get("lastTransitionTime")
        for c in last.get("conditions") or ()
        if isinstance(c, dict)
    }
    kept = [
        {**c, "lastTransitionTime": before.get((c.get("type"), c.get("status")))}
        if before.get((c.get("type"), c.get("status")))
        else c
        for c in conditions
    ]
    return {**status, "conditions": kept}


_condition = st.fixed_dictionaries(
    {"type": st.sampled_from(CONDITIONS), "status": st.sampled_from(["True", "False"])},
    optional={"lastTransitionTime": st.sampled_from(["", "2026-12-04T21:00:00Z", "t2"])},
)
_status = st.fixed_dictionaries(
    {"desired": st.integers(0, 3)},
    optional={"conditions": st.lists(_condition, max_size=5) | st.integers() | st.text(max_size=2)},
)


@settings(max_examples=1000, deadline=None)
@given(_status, st.one_of(st.none(), _json, _status))
def test_kept_transitions_from_the_kept_times_match_the_whole_document(
    status: dict[str, Any], last: Any
) -> None:
    last = _roundtrip(last)
    got = _kept_transitions(status, _shared_transitions(_transitions(last)))
    try:
        expected = _former_kept_transitions(status, last)
    except TypeError:
        # A hand-made status whose conditions cannot be iterated or hashed made every
        # write raise; now its times are not kept and the write replaces it.
        assert got == _kept_transitions(status, {})
        return
    assert got == expected


def test_an_unreadable_or_foreign_seed_is_no_status() -> None:
    for seed in ("null", "[1]", '"x"', "3", "{"):
        try:
            seeded = _comparable(json.loads(seed))
        except (ValueError, TypeError, AttributeError):
            seeded = None
        assert seeded is None and _transitions(seeded) is None


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.floats(1.7e9, 1.8e9)), max_size=30))
def test_shared_flips_are_the_tuples_they_stand_for(flips: list[tuple[bool, float]]) -> None:
    reporter = Reporter(lambda c: None, dry_run=True, wall_clock=lambda: 0.0)
    for status, now in flips:
        assert reporter._flip(status, now) == (status, _iso(now))


def _former_status_doc(  # the closure's document, as report.decided built it before
    spec: ScalingSpec,
    decision: Decision,
    readings: list[Reading],
    shown: dict[str, tuple[bool, str, str]],
    since: dict[str, str],
    at: float,
) -> dict[str, object]:
    conditions = []
    for kind, (status, reason, message) in shown.items():
        condition: dict[str, object] = {
            "type": kind,
            "status": "True" if status else "False",
            "reason": reason,
            "lastTransitionTime": since[kind],
        }
        if message:
            condition["message"] = message
        conditions.append(condition)
    doc = status_of(decision, readings, [t.name for t in spec.triggers], at)
    doc["conditions"] = conditions
    return doc


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(list(Reason)),
    st.booleans(),
    st.dictionaries(st.sampled_from(["redis:q", "other"]), st.text(max_size=3), max_size=2),
    st.lists(st.sampled_from(["t1", "t2"]), min_size=4, max_size=4),
    st.one_of(st.none(), st.integers(0, 9)),
)
def test_a_pending_status_builds_the_document_the_closure_built(
    reason: Reason, active: bool, errors: dict[str, str], times: list[str], value: int | None
) -> None:
    spec = parse_spec(
        {ANNOTATION_PREFIX + "redis-list": "q", ANNOTATION_PREFIX + "messages-per-replica": "3"}
    )
    decision = Decision(2, 1, reason, "a message", active)
    readings = [Reading(value) if value is not None else Reading.failed("down")]
    shown = conditions_of(decision, errors)
    assert tuple(shown) == CONDITIONS  # Workload.conditions keeps them in this order
    since = dict(zip(CONDITIONS, times, strict=True))
    statuses = [s for s, _, _ in shown.values()]
    conditions = tuple(zip(statuses, times, strict=True))
    pending = _Status(spec, decision, readings, _failing(errors), conditions, 5.0)
    assert pending() == _former_status_doc(spec, decision, readings, shown, since, 5.0)
    errors.clear()  # captured when decided: later failures are not in this status
    assert pending() == _former_status_doc(spec, decision, readings, shown, since, 5.0)


class _EventsTarget:
    """Records the Events a Reporter sends (``record_event``'s arguments, not awaited)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, bool]] = []

    def record_event(self, reason: str, message: str, *, warning: bool = False) -> None:
        self.events.append((reason, message, warning))


_step = st.tuples(
    st.integers(0, 1),  # which workload
    st.sampled_from([Reason.DESIRED_WITHIN_RANGE, Reason.FALLBACK_ACTIVE, Reason.PAUSED]),
    st.booleans(),  # active
    st.dictionaries(st.sampled_from(["redis:q"]), st.sampled_from(["down", "slow"])),
    st.floats(1.7e9, 1.7e9 + 5),  # wall time: several steps share a second
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_step, max_size=25))
def test_shared_conditions_give_the_events_and_documents_of_a_dict_per_workload(
    steps: list[tuple[int, Reason, bool, dict[str, str], float]],
) -> None:
    from autoscaler.controller.report import _EVENTS
    from autoscaler.controller.workload import Workload
    from autoscaler.workload import WorkloadRef

    spec = parse_spec(
        {ANNOTATION_PREFIX + "redis-list": "q", ANNOTATION_PREFIX + "messages-per-replica": "3"}
    )
    readings = [Reading(2)]
    clock = [0.0]
    builders: list[Callable[[], dict[str, object]]] = []  # built at the end: pending
    expected_docs = []
    reporter = Reporter(
        lambda c: None,
        dry_run=False,
        wall_clock=lambda: clock[0],
        write_status=lambda w, build: builders.append(build),
    )
    targets = [_EventsTarget(), _EventsTarget()]
    workloads = [
        Workload(WorkloadRef("ns", f"w{i}"), t, 1)  # type: ignore[arg-type]
        for i, t in enumerate(targets)
    ]
    former: list[dict[str, tuple[bool, str]]] = [{}, {}]  # the dict per workload, as before
    for i, reason, active, errors, now in steps:
        clock[0] = now
        decision = Decision(1, 1, reason, f"m{i}", active)
        w = workloads[i]
        w.trigger_errors = dict(errors)
        before_events = len(targets[i].events)
        reporter.decided(w, spec, decision, readings)
        # the former decided, step by step
        shown = conditions_of(decision, errors)
        expected_events = []
        for kind, (status, _, message) in shown.items():
            before = former[i].get(kind)
            if before is None or before[0] != status:
                former[i][kind] = (status, _iso(now))
                told = before is not None or (kind == "Fallback" and status)
                if told and (kind, status) in _EVENTS:
                    event, warning = _EVENTS[kind, status]
                    expected_events.append((event, message or f"{kind} ended: m{i}", warning))
        since = {kind: former[i][kind][1] for kind in shown}
        assert targets[i].events[before_events:] == expected_events
        expected_docs.append(_former_status_doc(spec, decision, readings, shown, since, now))
    assert [build() for build in builders] == expected_docs
