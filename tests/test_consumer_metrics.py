"""The sidecar's per-message families (``consumer.metrics.MessageCounts``) expose exactly
what prometheus_client's ``Counter`` and ``Histogram`` expose for the same updates."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

import autoscaler.metrics  # noqa: F401  (the processes' setting: no ``_created`` samples)
from autoscaler.consumer.metrics import BUCKETS_S, ConsumerMetrics, Outcome

QUEUE = 'jobs "a"\\b'  # escaping of label values too

seconds = st.one_of(
    st.sampled_from(BUCKETS_S),  # exactly on a bound: counted in that bucket (le)
    st.floats(min_value=0, max_value=100, allow_nan=False),
)


def _reference(observed: list[float], counted: list[tuple[Outcome, int]]) -> bytes:
    registry = CollectorRegistry()
    messages = Counter("queue_consumer_messages", "Messages by what became of them.",
                       ["queue", "outcome"], registry=registry)  # fmt: skip
    children = {o: messages.labels(queue=QUEUE, outcome=o.value) for o in Outcome}
    histogram = Histogram(
        "queue_consumer_processing_seconds",
        "Seconds from a message's first POST to its final answer, retries included.",
        ["queue"], buckets=BUCKETS_S, registry=registry,
    ).labels(queue=QUEUE)  # fmt: skip
    for value in observed:
        histogram.observe(value)
    for outcome, n in counted:
        children[outcome].inc(n)
    return generate_latest(registry)


@given(
    st.lists(seconds, max_size=50),
    st.lists(st.tuples(st.sampled_from(list(Outcome)), st.integers(0, 5)), max_size=20),
)
def test_message_counts_expose_what_a_counter_and_a_histogram_would(
    observed: list[float], counted: list[tuple[Outcome, int]]
) -> None:
    registry = CollectorRegistry()
    metrics = ConsumerMetrics(registry, QUEUE)
    for value in observed:
        metrics.processing_s.observe(value)
    for outcome, n in counted:
        metrics.count(outcome, n)
    families = ("queue_consumer_messages", "queue_consumer_processing_seconds")
    ours = [  # the other families of the registry left out
        line
        for line in generate_latest(registry).decode().splitlines()
        if line.removeprefix("# HELP ").removeprefix("# TYPE ").startswith(families)
    ]
    assert ours == _reference(observed, counted).decode().splitlines()
