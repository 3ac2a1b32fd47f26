"""Inputs, outputs and memory of the policy: readings, decisions, state. All frozen."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple


class Reason(StrEnum):
    """Why a decision came out as it did: a log field, an Event reason, a metric label."""

    PAUSED = "Paused"
    METRIC_ERROR = "MetricError"  # a trigger could not be read: hold, never scale down
    FALLBACK_ACTIVE = "FallbackActive"  # failure-threshold reached: fallback-replicas
    INACTIVE = "Inactive"  # at zero, every trigger at or below activation
    SCALE_TO_ZERO = "ScaleToZero"  # inactive for the whole cooldown
    ACTIVATED = "Activated"  # from zero: a trigger rose above activation
    SCALE_UP = "ScaleUp"
    SCALE_DOWN = "ScaleDown"
    SCALE_UP_LIMIT = "ScaleUpLimit"  # the scale-up rule capped the step
    SCALE_DOWN_STABILIZED = "ScaleDownStabilized"  # a higher recent recommendation holds
    WITHIN_TOLERANCE = "WithinTolerance"  # load/target within the tolerance band
    DESIRED_WITHIN_RANGE = "DesiredWithinRange"  # computed count equals current
    TOO_FEW_REPLICAS = "TooFewReplicas"  # raised to min-replicas
    TOO_MANY_REPLICAS = "TooManyReplicas"  # capped at max-replicas
    SCHEDULED_FLOOR = "ScheduledFloor"  # an open schedule window's floor decided the count
    REDIS_MEMORY_PRESSURE = "RedisMemoryPressure"  # above redis-memory-high: scale-up rule


class Reading(NamedTuple):
    """One trigger's observation in one cycle (a NamedTuple: immutable, and ten times
    cheaper to build than a frozen dataclass — the loop makes 10,000 per cycle).

    ``value`` is the load the trigger sizes on (for a Redis trigger: the queued messages,
    plus the in-flight ones when ``count-in-flight``); ``None`` means unknown — an error,
    a NaN or an empty Prometheus result — and is never read as zero. ``backlog``,
    ``processed_total`` (a monotonic counter of acked messages) and ``consumers`` (the
    consumers alive, i.e. the replicas actually serving — not the ones still starting)
    feed the rate-aware mode. ``memory_ratio`` is the queue's Redis ``used_memory /
    maxmemory`` as last read (every few cycles, not every one), for a trigger with memory
    watermarks; None when not watched or unknown.
    """

    value: float | None
    backlog: float | None = None
    in_flight: float | None = None
    processed_total: float | None = None
    error: str | None = None
    consumers: int | None = None
    memory_ratio: float | None = None

    @classmethod
    def failed(cls, error: str) -> Reading:
        return cls(value=None, error=error)

    @classmethod
    def from_queue(
        cls,
        backlog: float,
        in_flight: float = 0.0,
        processed_total: float | None = None,
        *,
        count_in_flight: bool = True,
        consumers: int | None = None,
    ) -> Reading:
        value = backlog + in_flight if count_in_flight else backlog
        return cls(value, backlog, in_flight, processed_total, consumers=consumers)


@dataclass(frozen=True, slots=True)
class RateEstimate:
    """The rate-aware mode's memory: the last sample and the smoothed rates (msgs/s)."""

    at: float
    backlog: float
    processed_total: float
    replicas: int  # the replicas serving at ``at``: live consumers when known
    arrival_rate: float | None = None  # λ, messages arriving per second
    service_rate: float | None = None  # μ, messages one replica finishes per second


# slots: one (or two, mid-decision) per workload, ~1 MB at 10,000 (docs/performance.md, goal 5)
@dataclass(frozen=True, slots=True)
class PolicyState:
    """What the policy remembers between cycles of one workload.

    ``recommendations`` are ``(time, replicas)`` inside the scale-down stabilization window;
    ``scale_ups`` are ``(time, replicas added)`` inside the scale-up period.
    """

    recommendations: tuple[tuple[float, int], ...] = ()
    scale_ups: tuple[tuple[float, int], ...] = ()
    inactive_since: float | None = None
    failures: int = 0
    rate: RateEstimate | None = None
    memory_pressure: bool = False  # above redis-memory-high, not yet below -low


@dataclass(frozen=True, slots=True)
class Decision:
    """The policy's answer for one cycle."""

    replicas: int
    current: int
    reason: Reason
    message: str
    active: bool = True
    recommendation: int | None = None  # before stabilization and rate limits

    @property
    def changed(self) -> bool:
        return self.replicas != self.current

    @property
    def direction(self) -> str:
        if self.replicas > self.current:
            return "up"
        return "down" if self.replicas < self.current else "none"
