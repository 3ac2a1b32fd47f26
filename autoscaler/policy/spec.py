"""The scaling spec: what one workload asks for, as frozen typed data.

``autoscaler.annotations`` parses annotations into these classes; the policy reads them.
They live in the policy package so that the policy imports nothing but the standard library.
All durations are seconds (``_s``); all counts are messages or replicas. Slotted: the
controller reads 10,000 specs and triggers per cycle.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from autoscaler.policy.schedule import Schedule


class _CountsMessages:
    """``target`` and ``activation`` (the policy's names) of a trigger counting messages."""

    __slots__ = ()
    messages_per_replica: float
    activation_messages: float

    @property
    def target(self) -> float:
        return self.messages_per_replica

    @property
    def activation(self) -> float:
        return self.activation_messages


@dataclass(frozen=True, slots=True)
class RedisTrigger(_CountsMessages):
    """Scale on the length of one or more Redis lists.

    ``value = backlog (+ in-flight when count_in_flight)``; replicas ``ceil(value / target)``.
    """

    lists: tuple[str, ...]
    messages_per_replica: float
    redis_url: str | None = None  # None: the controller's --redis-url
    activation_messages: float = 0.0
    count_in_flight: bool = True
    # Redis memory watermarks (used_memory / maxmemory): above ``memory_high`` scale up by
    # the scale-up rule until below ``memory_low`` (hysteresis). None: not watched.
    memory_high: float | None = None
    memory_low: float | None = None

    @property
    def name(self) -> str:
        return "redis:" + ",".join(self.lists)

    @property
    def queues(self) -> tuple[str, ...]:
        """The names consumers register under (the drain protocol's registry)."""
        return self.lists


# What a stream trigger counts as load (``redis-stream-load``), per stream of its group:
# lag (entries not yet delivered to the group), pending (delivered, not acknowledged:
# in flight), their sum, or the stream's length (XLEN, ignoring the group).
STREAM_LOADS = ("lag+pending", "lag", "pending", "length")


@dataclass(frozen=True, slots=True)
class RedisStreamTrigger(_CountsMessages):
    """Scale on Redis Streams read by one consumer group.

    ``value`` is the sum over ``streams`` of the ``load`` (one of ``STREAM_LOADS``);
    replicas ``ceil(value / target)``. A lag Redis cannot give (NULL after trimming or
    deletions) is computed by the source or the reading is unknown, never 0 or −1.
    """

    streams: tuple[str, ...]
    group: str
    messages_per_replica: float
    redis_url: str | None = None  # None: the controller's --redis-url
    activation_messages: float = 0.0
    load: str = "lag+pending"

    @property
    def name(self) -> str:
        return "redis-stream:" + ",".join(self.streams)

    @property
    def queues(self) -> tuple[str, ...]:
        """The names consumers register under (the drain protocol's registry)."""
        return self.streams


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


Trigger = RedisTrigger | RedisStreamTrigger | PrometheusTrigger


class FallbackBehavior(StrEnum):
    """What ``fallback-replicas`` means once the failure threshold is reached (KEDA's
    ``fallback.behavior``). Healthy triggers and floors still count: the max wins."""

    STATIC = "static"  # exactly fallback-replicas (may scale down)
    CURRENT = "current"  # keep the current count
    CURRENT_IF_HIGHER = "current-if-higher"  # the current count, at least fallback-replicas


@dataclass(frozen=True, slots=True)
class ScaleUpRule:
    """At most ``max(start + max_pods, ceil(start · (1 + max_percent/100)))`` replicas per period.

    ``start`` is the count at the beginning of the period (the HPA's ``periodStartReplicas``).
    """

    max_pods: int
    max_percent: float
    period_s: float


@dataclass(frozen=True, slots=True)
class ScalingSpec:
    """Everything the policy needs to size one workload.

    No defaults here: they are declared once, with each annotation, in
    ``autoscaler.annotations.KEYS`` (``parse_spec`` fills them in).
    """

    triggers: tuple[Trigger, ...]
    min_replicas: int
    max_replicas: int
    polling_interval_s: float
    tolerance: float
    scale_down_stabilization_s: float
    scale_up: ScaleUpRule
    cooldown_s: float
    fallback_replicas: int | None
    failure_threshold: int
    paused: bool
    drain: bool
    drain_timeout_s: float
    target_drain_time_s: float | None  # set: the rate-aware mode
    paused_replicas: int | None  # set: hold exactly this many replicas (KEDA paused-replicas)
    fallback_behavior: FallbackBehavior
    schedule: Schedule | None  # scheduled floors (cron windows, in the schedule's zone)
    schedule_timezone: str  # the IANA zone of ``schedule`` (also inside it)

    @property
    def redis_triggers(self) -> tuple[RedisTrigger, ...]:
        return tuple(t for t in self.triggers if isinstance(t, RedisTrigger))

    @property
    def stream_triggers(self) -> tuple[RedisStreamTrigger, ...]:
        return tuple(t for t in self.triggers if isinstance(t, RedisStreamTrigger))

    @property
    def queue_triggers(self) -> tuple[RedisTrigger | RedisStreamTrigger, ...]:
        """The triggers whose consumers speak the drain protocol (lists and streams)."""
        return tuple(t for t in self.triggers if isinstance(t, RedisTrigger | RedisStreamTrigger))

    @property
    def prometheus_triggers(self) -> tuple[PrometheusTrigger, ...]:
        return tuple(t for t in self.triggers if isinstance(t, PrometheusTrigger))
