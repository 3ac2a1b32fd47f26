"""The pure scaling policy. Standard library only (an import-linter contract keeps it so)."""

from autoscaler.policy.core import (
    decide,
    note_steady,
    proposal,
    scale_up_limit,
    steady,
    steady_candidate,
)
from autoscaler.policy.spec import (
    PrometheusTrigger,
    RedisStreamTrigger,
    RedisTrigger,
    ScaleUpRule,
    ScalingSpec,
    Trigger,
)
from autoscaler.policy.state import Decision, PolicyState, RateEstimate, Reading, Reason

__all__ = [
    "Decision",
    "PolicyState",
    "PrometheusTrigger",
    "RateEstimate",
    "Reading",
    "Reason",
    "RedisStreamTrigger",
    "RedisTrigger",
    "ScaleUpRule",
    "ScalingSpec",
    "Trigger",
    "decide",
    "note_steady",
    "proposal",
    "scale_up_limit",
    "steady",
    "steady_candidate",
]
