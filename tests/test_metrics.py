"""The controller's per-workload series (``autoscaler.workloadseries``) answer as
prometheus_client's children would: read through the registry, as dashboards see them."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

from autoscaler.annotations import ANNOTATION_PREFIX, parse_spec
from autoscaler.metrics import ControllerMetrics
from autoscaler.policy import ScalingSpec


def spec(lists: str) -> ScalingSpec:
    keys = {"redis-list": lists, "messages-per-replica": "5"}
    return parse_spec({ANNOTATION_PREFIX + k: v for k, v in keys.items()})


def rendered(metrics: ControllerMetrics) -> bytes:
    """The /metrics body (``render`` gives it in parts: its cached blocks)."""
    return b"".join(metrics.render())


class Observed:
    def __init__(self, *values: float | None) -> None:
        self.values = list(values)

    def gauges(self) -> list[float | None]:
        return list(self.values)


def test_steady_decisions_counted_in_bulk_read_as_each_counted_alone() -> None:
    registry = CollectorRegistry()
    metrics = ControllerMetrics(registry)
    a = metrics.decisions.labels("ns", "a", "WithinTolerance")
    b = metrics.decisions.labels("ns", "b", "WithinTolerance")
    a.inc()
    metrics.count_decisions([a, b, a])
    metrics.count_decisions([])

    def value(workload: str) -> float | None:
        labels = {"namespace": "ns", "workload": workload, "reason": "WithinTolerance"}
        return registry.get_sample_value("queue_autoscaler_decisions_total", labels)

    assert (value("a"), value("b")) == (3, 1)
    rendered(metrics)
    metrics.count_decisions([b])
    assert value("b") == 2
    assert b'reason="WithinTolerance",workload="b"} 2.0' in rendered(metrics)


def test_bound_gauges_read_the_workload_and_show_gaps_as_nan() -> None:
    registry = CollectorRegistry()
    metrics = ControllerMetrics(registry)
    observed = Observed()  # no decision yet
    metrics.track("ns", "w", spec("a"), observed)

    def value(name: str, **labels: str) -> float | None:
        labels |= {"namespace": "ns", "workload": "w"}
        return registry.get_sample_value(f"queue_autoscaler_{name}", labels)

    assert value("desired_replicas") != value("desired_replicas")  # NaN: not known
    observed.values = [4, 2, 0.0, 17.0, 15, 2]  # desired, current, fallback; the trigger's
    assert (value("desired_replicas"), value("current_replicas")) == (4, 2)
    assert value("fallback_active") == 0
    readings = [value(n, trigger="redis:a") for n in ("metric_value", "backlog", "in_flight")]
    assert readings == [17, 15, 2]
    observed.values[4] = None  # the read failed: a gap, not the last good value
    body = rendered(metrics)
    assert b'queue_autoscaler_backlog{namespace="ns",trigger="redis:a",workload="w"} NaN' in body


def test_a_new_spec_keeps_the_counts_of_the_triggers_it_keeps() -> None:
    registry = CollectorRegistry()
    metrics = ControllerMetrics(registry)
    metrics.track("ns", "w", spec("a"), Observed())
    metrics.source_errors.labels("ns", "w", "redis:a").inc(2)
    metrics.scale_events.labels("ns", "w", "up").inc()
    metrics.track("ns", "w", spec("a"), Observed())  # annotations changed, not the trigger

    def errors(trigger: str) -> float | None:
        labels = {"namespace": "ns", "workload": "w", "trigger": trigger}
        return registry.get_sample_value("queue_autoscaler_source_errors_total", labels)

    assert errors("redis:a") == 2
    labels = {"namespace": "ns", "workload": "w", "direction": "up"}
    assert registry.get_sample_value("queue_autoscaler_scale_events_total", labels) == 1
    metrics.track("ns", "w", spec("b"), Observed())
    assert (errors("redis:a"), errors("redis:b")) == (None, 0)


def test_a_forgotten_workload_comes_back_at_zero_in_a_reused_slot() -> None:
    registry = CollectorRegistry()
    metrics = ControllerMetrics(registry)
    for name in ("w0", "w1", "w2"):
        metrics.track("ns", name, spec("a"))
        metrics.drains.labels("ns", name, "requested").inc()
    rendered(metrics)
    metrics.forget("ns", "w1")
    metrics.track("ns", "w3", spec("a"))  # takes w1's slot
    metrics.track("ns", "w1", spec("a"))
    body = rendered(metrics).decode()
    requested = [line for line in body.splitlines() if 'stage="requested"' in line]
    assert [line.rsplit(" ", 1)[1] for line in requested] == ["1.0", "0.0", "1.0", "0.0"]
    assert 'workload="w3"' in requested[1] and 'workload="w1"' in requested[3]


def test_label_values_outside_their_set_are_refused() -> None:
    metrics = ControllerMetrics(CollectorRegistry())
    with pytest.raises(ValueError, match="decisions: reason 'Unknown' not in"):
        metrics.decisions.labels("ns", "w", "Unknown")
    with pytest.raises(ValueError, match="labels are namespace, workload, stage"):
        metrics.drains.labels("ns", "w")
    with pytest.raises(ValueError, match="non-negative"):
        metrics.undrained_removals.labels("ns", "w").inc(-1)
