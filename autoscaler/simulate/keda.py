"""The baseline: KEDA's Redis-lists scaler driving an HPA, with their documented defaults.

This is the setup users run today (``docs/keda-hpa-baseline.md``); it must be faithful
to the defaults, never tuned to lose. What is modelled:

- **KEDA** polls the scaler every ``pollingInterval`` (30 s) for activation only: the
  value is ``LLEN`` (queued messages; in-flight ones are invisible to it), *active* when
  it is above ``activationListLength`` (0). Active at zero replicas → scale to 1 (or to
  ``minReplicaCount``). Inactive with replicas and ``minReplicaCount`` 0 → scale to 0
  once the last active poll is more than ``cooldownPeriod`` (300 s) ago.
- **HPA** syncs every 15 s, only while the workload has replicas (at 0 it is disabled;
  KEDA owns 0↔1). Its External metric is ``LLEN`` with an ``AverageValue`` target of
  ``listLength``; KEDA's metrics server queries the scaler when the HPA asks, so each sync
  sees the current ``LLEN``. ``desired = ceil(LLEN / listLength)`` unless
  ``|LLEN / (listLength · current) − 1| ≤ 0.1``; then ``stabilizeRecommendationWithBehaviors``
  (scale-up window 0 s; scale-down window 300 s: no lower than the highest raw
  recommendation of the window) and ``convertDesiredReplicasWithBehaviorRules``
  (scale-up ≤ max(+4 pods, +100 %) per 15 s counted from the period's start, scale-down
  ≤ 100 % per 15 s; min ``max(1, minReplicaCount)``, max ``maxReplicaCount``). Scale
  events in the period count when strictly newer than ``now − 15 s``, as in the HPA.
- **ReplicaSet** scale-down removes pods ranked not-ready first, then the most recently
  ready, then the newest — without regard to what they hold: their in-flight messages
  are interrupted (the engine requeues them at the head and counts them).

Phases: KEDA polls at multiples of 30 s, the HPA at multiples of 15 s, both from t=0.
When both fall on the same second KEDA acts first and the HPA sees its result at once —
the order that favours the baseline. The user-level settings (``listLength``,
``activationListLength``, min and max) mirror the spec's, so both policies are
configured for the same workload; only the machinery differs.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from autoscaler.policy import ScalingSpec
from autoscaler.simulate.engine import Cluster, Replica


@dataclass(frozen=True)
class KedaSettings:
    """A ScaledObject plus the HPA behaviour KEDA creates for it (defaults: as documented)."""

    list_length: float = 5.0  # target messages per replica (AverageValue)
    activation_list_length: float = 0.0
    min_replica_count: int = 0
    max_replica_count: int = 100
    polling_interval_s: float = 30.0
    cooldown_period_s: float = 300.0
    hpa_sync_s: float = 15.0
    tolerance: float = 0.1
    scale_down_stabilization_s: float = 300.0
    scale_up_pods: int = 4
    scale_up_percent: float = 100.0
    scale_up_period_s: float = 15.0
    scale_down_percent: float = 100.0
    scale_down_period_s: float = 15.0

    @classmethod
    def like(cls, spec: ScalingSpec) -> KedaSettings:
        """The ScaledObject a user would write for the same queue, target and bounds."""
        trigger = spec.redis_triggers[0]
        return cls(
            list_length=trigger.messages_per_replica,
            activation_list_length=trigger.activation_messages,
            min_replica_count=spec.min_replicas,
            max_replica_count=spec.max_replicas,
        )


class KedaHpa:
    """The KEDA operator loop and the HPA controller, acting on one workload."""

    name = "keda_hpa"

    def __init__(self, settings: KedaSettings, ticks_per_s: int) -> None:
        self.settings = settings
        self.k = ticks_per_s
        self.poll_ticks = max(1, round(settings.polling_interval_s * ticks_per_s))
        self.sync_ticks = max(1, round(settings.hpa_sync_s * ticks_per_s))
        self.next_tick = 0
        self.initial_replicas = settings.min_replica_count
        self.last_active: int | None = None  # KEDA's status.lastActiveTime
        self.recommendations: list[tuple[int, int]] = []  # (tick, raw desired)
        # (tick, pods added/removed) by the HPA, only those inside their policy period: the
        # HPA forgets older scale events too, and summing a whole run's would be quadratic.
        self.scale_ups: deque[tuple[int, int]] = deque()
        self.scale_downs: deque[tuple[int, int]] = deque()

    def control(self, cluster: Cluster, tick: int) -> None:
        if tick % self.poll_ticks == 0:
            self._keda_poll(cluster, tick)
        if tick % self.sync_ticks == 0:
            self._hpa_sync(cluster, tick)
        self.next_tick = min(
            (tick // self.poll_ticks + 1) * self.poll_ticks,
            (tick // self.sync_ticks + 1) * self.sync_ticks,
        )

    def _keda_poll(self, cluster: Cluster, tick: int) -> None:
        """Activation 0↔1 (KEDA ``scale_executor``: ``RequestScale``)."""
        s = self.settings
        current = cluster.replica_count
        if cluster.backlog > s.activation_list_length:
            self.last_active = tick
            if current == 0:
                self._scale(cluster, tick, max(1, s.min_replica_count))
        elif current > 0 and s.min_replica_count == 0:
            cooldown = s.cooldown_period_s * self.k
            if self.last_active is None or tick - self.last_active > cooldown:
                self._scale(cluster, tick, 0)

    def _hpa_sync(self, cluster: Cluster, tick: int) -> None:
        """One HPA reconcile: metric → raw desired → stabilized → rate-limited → scale."""
        s = self.settings
        current = cluster.replica_count
        if current == 0:
            return  # ScalingDisabled: KEDA brings it to 1 first
        usage = cluster.backlog
        raw = current
        if abs(1.0 - usage / (s.list_length * current)) > s.tolerance:
            raw = math.ceil(usage / s.list_length)
        wanted = self._stabilize(raw, current, tick)
        wanted = min(max(wanted, self._down_limit(current, tick)), self._up_limit(current, tick))
        if wanted > current:
            self.scale_ups.append((tick, wanted - current))
        elif wanted < current:
            self.scale_downs.append((tick, current - wanted))
        if wanted != current:
            self._scale(cluster, tick, wanted)

    def _stabilize(self, raw: int, current: int, tick: int) -> int:
        """``stabilizeRecommendationWithBehaviors``; default windows: up 0 s, down 300 s."""
        cutoff = tick - self.settings.scale_down_stabilization_s * self.k
        self.recommendations = [(at, n) for at, n in self.recommendations if at > cutoff]
        highest = max([raw, *(n for _, n in self.recommendations)])
        self.recommendations.append((tick, raw))
        return min(max(current, raw), highest)

    def _up_limit(self, current: int, tick: int) -> int:
        """``calculateScaleUpLimitWithScalingRules`` (selectPolicy Max), capped at max."""
        s = self.settings
        cutoff = tick - s.scale_up_period_s * self.k
        start = current - _sum_since(self.scale_ups, cutoff)
        limit = max(start + s.scale_up_pods, math.ceil(start * (1 + s.scale_up_percent / 100)))
        return min(max(limit, current), s.max_replica_count)

    def _down_limit(self, current: int, tick: int) -> int:
        """``calculateScaleDownLimitWithBehaviors``, floored at the HPA's min (≥ 1)."""
        s = self.settings
        cutoff = tick - s.scale_down_period_s * self.k
        start = current + _sum_since(self.scale_downs, cutoff)
        limit = math.floor(start * (1 - s.scale_down_percent / 100))
        return max(min(limit, current), s.min_replica_count, 1)

    def _scale(self, cluster: Cluster, tick: int, replicas: int) -> None:
        """Patch ``/scale``: the ReplicaSet adds pods, or kills the lowest-ranked ones."""
        current = cluster.replica_count
        if replicas > current:
            cluster.request(replicas - current, tick)
        for pod in sorted(cluster.alive(), key=_deletion_rank)[: max(current - replicas, 0)]:
            cluster.kill(pod, tick)
        cluster.record_scale(tick, current, replicas)


def _sum_since(events: deque[tuple[int, int]], cutoff: float) -> int:
    """Pods changed after ``cutoff``; events at or before it are dropped for good (ticks
    only grow, so a cutoff never moves back)."""
    while events and events[0][0] <= cutoff:
        events.popleft()
    return sum(n for _, n in events)


def _deletion_rank(pod: Replica) -> tuple[bool, int, int]:
    """ReplicaSet ``ActivePodsWithRanks``: not ready, then ready most recently, then newest."""
    return (pod.ready, -pod.ready_at, -pod.rid)
