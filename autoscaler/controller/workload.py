"""One workload as the loop tracks it: its spec (or why it has none), policy memory, action.

Terms: a workload is *serviceable* when its spec parses, it is not targeted by another
autoscaler (an HPA) and no action (scale or drain) is in flight for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from autoscaler.annotations import in_namespace, parse_spec
from autoscaler.errors import InvalidSpecError
from autoscaler.policy import Band, Decision, PolicyState, Reading, Reason, ScalingSpec
from autoscaler.targets import Target
from autoscaler.workload import WorkloadRef
from autoscaler.workloadseries import Child


@dataclass(slots=True)  # compact: the loop walks 10,000 of them per cycle
class Workload:
    ref: WorkloadRef
    target: Target
    current: int
    spec: ScalingSpec | None = None
    error: InvalidSpecError | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    managed_elsewhere: str | None = None
    state: PolicyState = field(default_factory=PolicyState)
    due_at: float = 0.0
    action: asyncio.Task[None] | None = None
    last_decision: Decision | None = None
    last_readings: list[Reading] | None = None
    # the last cycle not run through decide (policy.steady, policy.band), to be recorded
    skipped_at: float | None = None
    # last_decision when policy.steady_candidate holds for it: a later cycle with the same
    # count and readings may skip decide
    steady_decision: Decision | None = None
    # policy.band of last_decision: readings within it skip decide too (see policy.band)
    band: Band | None = None
    # decisions{reason=last reason} of this workload, kept to count steady cycles cheaply
    decision_counter: Child | None = None
    reported_error: str | None = None  # the invalid-spec message already sent as an Event
    reported_conflict: str | None = None
    failures: int = 0  # unexpected errors in a row, for backoff
    # What the operator was last told (controller.report): the decision in substance,
    # each failing trigger's cause, each condition's (status, lastTransitionTime) in
    # report.CONDITIONS order (() before the first report; shared, never changed).
    reported: tuple[object, ...] | None = None
    trigger_errors: dict[str, str] = field(default_factory=dict)
    conditions: tuple[tuple[bool, str], ...] = ()

    # ---- read by the per-workload gauges when rendered (``metrics.Observed``) ----------

    def gauges(self) -> list[float | None]:
        """Desired, current, fallback active; then each trigger's value, backlog and in
        flight (None: not known). One call a workload per /metrics render (six calls cost
        ~40 ms a render at 10,000 workloads)."""
        d = self.last_decision
        out: list[float | None] = (
            [None, None, None]
            if d is None
            else [d.replicas, self.current, 1.0 if d.reason is Reason.FALLBACK_ACTIVE else 0.0]
        )
        for r in self.last_readings or ():
            out += (r.value, r.backlog, r.in_flight)
        return out

    @property
    def busy(self) -> bool:
        return self.action is not None and not self.action.done()

    def update_annotations(self, annotations: Mapping[str, str]) -> bool:
        """Re-parse the spec when the annotations changed; True when the spec changed."""
        if annotations == self.annotations and (self.spec or self.error):
            return False
        # A read-only view (the Kubernetes watch's: kube.workloads) is kept as given, not
        # copied: ~1.8 MB at 10,000 workloads (docs/performance.md, goal 5). Any other
        # mapping may change under us: a copy.
        self.annotations = (
            annotations if type(annotations) is MappingProxyType else dict(annotations)
        )
        try:
            spec = in_namespace(parse_spec(annotations), self.ref.namespace)
        except InvalidSpecError as e:
            self.spec, self.error = None, e
            return True
        changed = spec != self.spec
        self.spec, self.error = spec, None
        if changed:
            self.state = PolicyState()  # new rules: start the windows afresh
            self.last_decision, self.last_readings, self.skipped_at = None, None, None
            self.steady_decision, self.band = None, None
            self.reported = None
        return changed


def status_of(
    decision: Decision, readings: list[Reading], names: list[str], at: float
) -> dict[str, object]:
    """The JSON recorded in the ``queue-autoscaler.io/status`` annotation (``autoscaler
    status`` reads it): the decision, each trigger's reading, and the queues' backlog and
    in-flight totals (None when no queue trigger reports them) as of that decision."""
    backlogs = [r.backlog for r in readings if r.backlog is not None]
    held = [r.in_flight for r in readings if r.in_flight is not None]
    return {
        "desired": decision.replicas,
        "current": decision.current,
        "reason": str(decision.reason),
        "message": decision.message,
        "active": decision.active,
        "triggers": names,
        "readings": {
            name: (r.value if r.value is not None else f"error: {r.error}")
            for name, r in zip(names, readings, strict=True)
        },
        "backlog": sum(backlogs) if backlogs else None,
        "inFlight": sum(held) if held else None,
        "time": at,
    }
