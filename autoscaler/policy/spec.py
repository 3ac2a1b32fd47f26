"""The scaling spec: what one workload asks for, as frozen typed data.

``autoscaler.config`` parses annotations into these classes; the policy reads them. They
live in the policy package so that the policy imports nothing but the standard library.
All durations are seconds (``_s``); all counts are messages or replicas. Slotted: the
controller reads 10,000 specs and triggers per cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class RedisTrigger:
    """Scale on the length of one or more Redis lists.

    ``value = backlog (+ in-flight when count_in_flight)``; replicas ``ceil(value / target)``.
    """

    lists: tuple[str, ...]
    messages_per_replica: float
    redis_url: str | None = None  # None: the controller's --redis-url
    activation_messages: float = 0.0
    count_in_flight: bool = True

    @property
    def name(self) -> str:
        return "redis:" + ",".join(self.lists)

    @property
    def target(self) -> float:
        return self.messages_per_replica

    @property
    def activation(self) -> float:
        return self.activation_messages


@dataclass(frozen=True, slots=True)
class PrometheusTrigger:
    """Scale on an instant PromQL query: replicas ``ceil(value / target)``."""

    query: str
    target: float
    url: str | None = None  # None: the controller's --prometheus-url
    activation: float = 0.0

    @property
    def name(self) -> str:
        return "prometheus"


Trigger = RedisTrigger | PrometheusTrigger


@dataclass(frozen=True, slots=True)
class ScaleUpRule:
    """At most ``max(start + max_pods, ceil(start · (1 + max_percent/100)))`` replicas per period.

    ``start`` is the count at the beginning of the period (the HPA's ``periodStartReplicas``).
    """

    max_pods: int = 10
    max_percent: float = 100.0
    period_s: float = 15.0


@dataclass(frozen=True, slots=True)
class ScalingSpec:
    """Everything the policy needs to size one workload. Defaults are the README's table."""

    triggers: tuple[Trigger, ...]
    min_replicas: int = 0
    max_replicas: int = 100
    polling_interval_s: float = 5.0
    tolerance: float = 0.1
    scale_down_stabilization_s: float = 60.0
    scale_up: ScaleUpRule = field(default_factory=ScaleUpRule)
    cooldown_s: float = 120.0
    fallback_replicas: int | None = None
    failure_threshold: int = 3
    paused: bool = False
    drain: bool = True
    drain_timeout_s: float = 120.0
    target_drain_time_s: float | None = None  # set: the rate-aware mode

    @property
    def redis_triggers(self) -> tuple[RedisTrigger, ...]:
        return tuple(t for t in self.triggers if isinstance(t, RedisTrigger))

    @property
    def prometheus_triggers(self) -> tuple[PrometheusTrigger, ...]:
        return tuple(t for t in self.triggers if isinstance(t, PrometheusTrigger))
