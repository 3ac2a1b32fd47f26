"""``BatchedCounter``: increments queued in bulk read exactly as ``inc()`` calls would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from autoscaler.metrics import BatchedCounter


def test_queued_increments_show_at_collection_time() -> None:
    registry = CollectorRegistry()
    counter = BatchedCounter("c", "A counter.", ("w",), registry=registry)
    a, b = counter.labels("a"), counter.labels("b")
    a.inc()
    counter.inc_each([a, b, a])
    counter.inc_each([])
    counter.inc_each([b])
    assert registry.get_sample_value("c_total", {"w": "a"}) == 3
    assert registry.get_sample_value("c_total", {"w": "b"}) == 2
    counter.inc_each([a])
    assert registry.get_sample_value("c_total", {"w": "a"}) == 4  # applied once, not twice


def test_a_long_queue_is_applied_without_a_scrape() -> None:
    counter = BatchedCounter("c", "A counter.", ("w",), registry=None)
    counter.MAX_PENDING = 4
    a = counter.labels("a")
    counter.inc_each([a, a, a])
    assert a._value.get() == 0  # queued
    counter.inc_each([a, a])
    assert a._value.get() == 5  # over the bound: applied
