"""The sidecar's settings: meaning, unit and default of each (kopf's ``configuration.py``).

The CLI fills these from flags; tests build them directly, with short timings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from autoscaler.redisqueue import ConsumerKeys

MIB = 1 << 20


@dataclass(frozen=True)
class ConsumerSettings:
    """Everything one ``autoscaler consume`` process needs to know, validated by the CLI."""

    # The Redis list to consume (producers LPUSH; we take from the right).
    queue: str
    # The local processor each message is POSTed to, e.g. http://127.0.0.1:8080/process.
    forward_url: str
    # Unique per consumer (the pod name): part of key names and of the registry.
    consumer_id: str
    # The pod name shown in the registry (POD_NAME), defaulting to the id.
    pod: str = ""
    # Messages in flight at once.
    concurrency: int = 1
    # Maximum messages taken per second; None: unlimited.
    rate_per_s: float | None = None
    # A message delivered this many times without success goes to the dead-letter list.
    max_deliveries: int = 5
    # The dead-letter list; "" means ``<queue>:dead``.
    dead_letter: str = ""
    # Seconds one POST to the processor may take before it counts as a failed delivery.
    request_timeout_s: float = 30.0
    # Seconds a drain waits for held messages to finish before pushing them back.
    drain_timeout_s: float = 120.0
    # Seconds between heartbeats; the lease lives 3 heartbeats.
    heartbeat_interval_s: float = 1.0
    # Bigger messages are dead-lettered unsent (the processor would choke on them).
    max_message_bytes: int = MIB
    # Seconds one idle BLMOVE blocks: how soon an idle slot notices a drain or a stop.
    take_timeout_s: float = 1.0
    # Retry backoff (--retry-backoff, --retry-max-backoff): the first wait, doubling per
    # delivery (or per failed probe of a processor that is down) up to the cap, the upper
    # half jitter. Also paces Redis retries.
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    # Answered failures of this many different messages in a row (no success between)
    # mean the processor fails everything: the breaker opens and stops counting them.
    breaker_threshold: int = 3
    # Seconds between checks that the processing list holds only what the slots hold
    # (one LLEN; the list is read whole only on a mismatch or after a Redis error).
    reconcile_interval_s: float = 10.0

    @property
    def keys(self) -> ConsumerKeys:
        # imported on use: the CLI reads MIB from here, and its --help must not load redis
        from autoscaler.redisqueue import ConsumerKeys

        return ConsumerKeys(self.queue, self.consumer_id, self.dead_letter)

    @property
    def lease_ms(self) -> int:
        return max(1, round(self.heartbeat_interval_s * 3000))

    @property
    def pod_name(self) -> str:
        return self.pod or self.consumer_id
