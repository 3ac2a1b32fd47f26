"""The sidecar's Prometheus series, registered on an injected ``CollectorRegistry``.

Labels are ``queue`` and ``outcome`` only: message and consumer ids would make a series
per message or per pod restart (the pod label comes from the scrape, not from us).

    queue_consumer_messages_total{queue, outcome}   acked | retried | dead_lettered | pushed_back
    queue_consumer_processing_seconds{queue}        first POST → final answer, per message
    queue_consumer_in_flight{queue}                 messages held now
    queue_consumer_state{queue, queue_consumer_state}  running | draining | drained (enum)
    queue_consumer_redis_errors_total{queue}        failed Redis operations (retried)
    queue_consumer_processor_up{queue}              1, or 0 while the breaker is open
    queue_consumer_processor_unavailable_total{queue}  deliveries not counted: processor down
    queue_consumer_orphans_total{queue}             messages reconciled back to the queue
    queue_consumer_redis_durability_risk{queue, risk}  1: this Redis can lose messages
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from enum import StrEnum

from prometheus_client import CollectorRegistry, Enum, Gauge
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from autoscaler.keys import ConsumerState

# From a fast local processor (~1 ms) to a slow one near the default 30 s request timeout.
BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Outcome(StrEnum):
    ACKED = "acked"
    RETRIED = "retried"
    DEAD_LETTERED = "dead_lettered"
    PUSHED_BACK = "pushed_back"


# The ``le`` label of each bucket, as prometheus_client writes it.
_LE = [floatToGoString(b) for b in BUCKETS_S] + ["+Inf"]  # type: ignore[no-untyped-call]


class MessageCounts(Collector):
    """The two families every message updates, ``queue_consumer_messages_total`` and
    ``queue_consumer_processing_seconds``, kept as plain numbers.

    A prometheus_client child takes a lock and a few Python calls per update: ~10 calls
    and three locks for a message's processing time and its ack (cProfile of the sidecar
    in bench_consumer). Here an update is an addition made on the event loop,
    their only writer; a scrape reads them when it collects (from its render thread: a
    sample may miss an update made meanwhile, as with prometheus_client's own locks per
    value). Same samples as a prometheus_client ``Counter`` and ``Histogram`` fed the same
    updates: tests/test_consumer_metrics.py.
    """

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.outcomes = dict.fromkeys(Outcome, 0)
        self.buckets = [0] * len(_LE)  # per bucket, not cumulative; the last is +Inf
        self.seconds = 0.0

    def observe(self, seconds: float) -> None:
        """One message's processing time (≥ 0)."""
        self.buckets[bisect_left(BUCKETS_S, seconds)] += 1  # the first bound ≥ it, as le
        self.seconds += seconds

    def collect(self) -> Iterator[Metric]:
        messages = CounterMetricFamily(
            "queue_consumer_messages", "Messages by what became of them.",
            labels=["queue", "outcome"],
        )  # fmt: skip
        for outcome, n in list(self.outcomes.items()):
            messages.add_metric([self.queue, outcome.value], n)
        yield messages
        processing = HistogramMetricFamily(
            "queue_consumer_processing_seconds",
            "Seconds from a message's first POST to its final answer, retries included.",
            labels=["queue"],
        )
        total, cumulative = 0, []
        for le, n in zip(_LE, list(self.buckets), strict=True):
            total += n
            cumulative.append((le, float(total)))
        processing.add_metric([self.queue], cumulative, self.seconds)
        yield processing


class ConsumerMetrics:
    """Pre-bound children for one queue; the per-message families are ``MessageCounts``."""

    def __init__(self, registry: CollectorRegistry, queue: str) -> None:
        self._counts = MessageCounts(queue)
        registry.register(self._counts)
        self.processing_s = self._counts  # .observe(seconds), as a Histogram child
        self.in_flight = Gauge(
            "queue_consumer_in_flight", "Messages held now.", ["queue"], registry=registry
        ).labels(queue=queue)
        self._state = Enum(
            "queue_consumer_state",
            "What the consumer is doing.",
            ["queue"],
            states=[s.value for s in ConsumerState],
            registry=registry,
        ).labels(queue=queue)
        self.redis_errors = PromCounter(
            "queue_consumer_redis_errors",
            "Redis operations that failed and were retried.",
            ["queue"],
            registry=registry,
        ).labels(queue=queue)

        self.processor_up = Gauge(
            "queue_consumer_processor_up",
            "1 while the processor answers; 0 while the circuit breaker is open.",
            ["queue"],
            registry=registry,
        ).labels(queue=queue)
        self.processor_unavailable = PromCounter(
            "queue_consumer_processor_unavailable",
            "Delivery attempts that found the processor down or failing everything "
            "(not counted as deliveries).",
            ["queue"],
            registry=registry,
        ).labels(queue=queue)
        self.orphans = PromCounter(
            "queue_consumer_orphans",
            "Messages found in the processing list that no slot held (a lost reply), "
            "returned to the queue.",
            ["queue"],
            registry=registry,
        ).labels(queue=queue)
        self.durability_risk = Gauge(
            "queue_consumer_redis_durability_risk",
            "1 when the queue's Redis can lose messages, by risk (no_persistence, eviction).",
            ["queue", "risk"],
            registry=registry,
        )
        self._queue = queue

    def risks(self, risks: dict[str, bool]) -> None:
        for risk, present in risks.items():
            self.durability_risk.labels(queue=self._queue, risk=risk).set(int(present))

    def count(self, outcome: Outcome, n: int = 1) -> None:
        self._counts.outcomes[outcome] += n

    def state(self, state: ConsumerState) -> None:
        self._state.state(state.value)
