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

from enum import StrEnum

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram

from autoscaler.keys import ConsumerState

# From a fast local processor (~1 ms) to a slow one near the default 30 s request timeout.
BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Outcome(StrEnum):
    ACKED = "acked"
    RETRIED = "retried"
    DEAD_LETTERED = "dead_lettered"
    PUSHED_BACK = "pushed_back"


class ConsumerMetrics:
    """Pre-bound children for one queue, so the per-message cost is one locked add."""

    def __init__(self, registry: CollectorRegistry, queue: str) -> None:
        messages = Counter(
            "queue_consumer_messages",
            "Messages by what became of them.",
            ["queue", "outcome"],
            registry=registry,
        )
        self._messages = {o: messages.labels(queue=queue, outcome=o.value) for o in Outcome}
        self.processing_s = Histogram(
            "queue_consumer_processing_seconds",
            "Seconds from a message's first POST to its final answer, retries included.",
            ["queue"],
            buckets=BUCKETS_S,
            registry=registry,
        ).labels(queue=queue)
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
        self.redis_errors = Counter(
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
        self.processor_unavailable = Counter(
            "queue_consumer_processor_unavailable",
            "Delivery attempts that found the processor down or failing everything "
            "(not counted as deliveries).",
            ["queue"],
            registry=registry,
        ).labels(queue=queue)
        self.orphans = Counter(
            "queue_consumer_orphans",
            "Messages found in the processing list that no slot held (a lost reply), "
            "returned to the queue.",
            ["queue"],
            registry=registry,
        ).labels(queue=queue)
        self.durability_risk = Gauge(
            "queue_consumer_redis_durability_risk",
            "1 when the queue's Redis can lose messages, by risk "
            "(no_persistence, eviction).",
            ["queue", "risk"],
            registry=registry,
        )
        self._queue = queue

    def risks(self, risks: dict[str, bool]) -> None:
        for risk, present in risks.items():
            self.durability_risk.labels(queue=self._queue, risk=risk).set(int(present))

    def count(self, outcome: Outcome, n: int = 1) -> None:
        if n:
            self._messages[outcome].inc(n)

    def state(self, state: ConsumerState) -> None:
        self._state.state(state.value)
