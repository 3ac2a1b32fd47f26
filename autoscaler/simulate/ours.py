"""Our controller in the loop: the pure ``decide`` plus the drain-before-scale-down protocol.

Every ``polling-interval`` (from t=0) the controller reads the queue as the Redis source
would — backlog (``LLEN``), in-flight (the consumers' processing lists, draining ones
included) and the processed counter — and calls :func:`autoscaler.policy.decide` with
``current`` = the replicas that are not draining (starting ones included: they are
requested). Then, as the drain protocol does (``docs/architecture.md``):

- **scale-up** first cancels drains in progress (a rising backlog cancels a drain; the
  replica is warm, it takes messages again at once), then requests new replicas, which
  take work ``startup_delay`` later;
- **scale-down** picks victims — starting replicas first, then the fewest messages in
  flight, then the newest — and drains them: a victim stops taking messages, finishes
  what it holds and is removed when its last message is done (idle and starting victims
  at once). Replica-seconds run until removal. No message is ever interrupted: the run
  raises if one is (with ``drain: false`` victims are killed like the ReplicaSet does).

``drain-timeout`` is not modelled: a victim holds at most ``service_time`` of work, so
it matters only when the service time exceeds it.
"""

from __future__ import annotations

from autoscaler.annotations import spec_with
from autoscaler.errors import InputError
from autoscaler.policy import (
    PolicyState,
    Reading,
    RedisTrigger,
    ScalingSpec,
    decide,
)
from autoscaler.simulate.engine import Cluster, Replica


def default_spec(messages_per_replica: float = 10.0) -> ScalingSpec:
    """The built-in spec: one queue, the policy's defaults, 10 messages per replica."""
    return spec_with((RedisTrigger(("queue",), messages_per_replica),))


def check_spec(spec: ScalingSpec, source: str) -> None:
    """The simulation replays one queue: every trigger must be a Redis list."""
    if not spec.redis_triggers:
        raise InputError(f"{source}: simulate needs a redis-list trigger (the queue replayed)")
    if spec.prometheus_triggers:
        raise InputError(
            f"{source}: simulate replays one queue; remove the prometheus-* keys "
            "(a Prometheus trigger has no queue to model)"
        )


class Ours:
    """``decide`` every polling interval; grow by un-draining, then by new replicas."""

    name = "queue_autoscaler"

    def __init__(
        self, spec: ScalingSpec, ticks_per_s: int, start_wall_s: float | None = None
    ) -> None:
        """``start_wall_s``: the trace's t=0 in the calendar (epoch seconds), for the
        ``schedule`` floor; None replays without a calendar (no schedule floor)."""
        check_spec(spec, "spec")
        self.spec = spec
        self.start_wall_s = start_wall_s
        self.k = ticks_per_s
        self.poll_ticks = max(1, round(spec.polling_interval_s * ticks_per_s))
        self.next_tick = 0
        self.initial_replicas = spec.min_replicas
        self.state = PolicyState()

    def control(self, cluster: Cluster, tick: int) -> None:
        serving = cluster.serving()
        readings = [
            Reading.from_queue(
                cluster.backlog,
                cluster.in_flight,
                cluster.processed,
                count_in_flight=trigger.count_in_flight,
                # the consumers registered: replicas started and still taking messages
                consumers=sum(1 for r in serving if r.ready),
            )
            for trigger in self.spec.redis_triggers
        ]
        now = cluster.seconds(tick)
        wall = None if self.start_wall_s is None else self.start_wall_s + now
        decision, self.state = decide(self.spec, len(serving), readings, self.state, now, wall)
        if decision.replicas > len(serving):
            self._grow(cluster, decision.replicas - len(serving))
            cluster.request(decision.replicas - len(cluster.serving()), tick)
        elif decision.replicas < len(serving):
            for victim in sorted(serving, key=_victim_rank)[: len(serving) - decision.replicas]:
                if self.spec.drain:
                    cluster.drain(victim, tick)
                else:
                    cluster.kill(victim, tick)
        cluster.record_scale(tick, len(serving), decision.replicas)
        self.next_tick = tick + self.poll_ticks

    @staticmethod
    def _grow(cluster: Cluster, wanted: int) -> None:
        """Cancel drains first, busiest first: warm replicas beat a pod start."""
        for replica in sorted(cluster.draining(), key=lambda r: -r.in_flight)[:wanted]:
            cluster.revive(replica)


def _victim_rank(replica: Replica) -> tuple[bool, int, int]:
    """Starting first, then fewest in flight (idle ones first), then newest."""
    return (replica.ready, replica.in_flight, -replica.rid)
