"""The pure scaling policy. Standard library only (an import-linter contract keeps it so)."""

from autoscaler.policy.core import (
    Band,
    band,
    decide,
    note_steady,
    proposal,
    scale_up_limit,
    steady,
    steady_candidate,
    within,
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
    "Band",
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
    "band",
    "decide",
    "note_steady",
    "proposal",
    "scale_up_limit",
    "steady",
    "steady_candidate",
    "within",
]
