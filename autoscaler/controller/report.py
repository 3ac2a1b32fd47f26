"""What an operator sees of each workload: the status annotation's conditions, and Events.

Conditions (the ones KEDA's ScaledObject shows), each ``{type, status, reason, message,
lastTransitionTime}`` — the time changes only when the status flips:

- ``Ready``: every trigger was read (False: ``TriggerError``, naming the causes);
- ``Active``: a trigger above its activation level, an open ``schedule`` window, Redis
  memory pressure, or a trigger that cannot be read (unknown is never idle);
- ``Fallback``: ``fallback-replicas`` is in force;
- ``Paused``: ``paused`` or ``paused-replicas``.

Events, once per change and never once per cycle, each with the same text in a log line:
``TriggerFailed`` (Warning; the cause, e.g. Prometheus's "2 series, expected one:
aggregate it, e.g. sum(...)") and ``TriggerRecovered``; ``WorkloadActive`` and
``WorkloadIdle``; ``FallbackEntered`` (Warning) and ``FallbackLeft``; ``Paused`` and
``Resumed`` — on a flip, never for the first decision after a start (no Event storm from
a restarted controller), except a fallback already in force. A cause is compared without
the backoff's countdown ("next attempt in 3.2 s"), which changes every cycle while the
cause does not. ``--dry-run`` logs, writes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from autoscaler.logs import log_event
from autoscaler.policy import Decision, Reading, Reason, ScalingSpec

from .workload import Workload, status_of

logger = logging.getLogger(__name__)

CONDITIONS = ("Ready", "Active", "Fallback", "Paused")
# (condition, new status) → (Event reason, Warning?)
_EVENTS = {
    ("Active", True): ("WorkloadActive", False),
    ("Active", False): ("WorkloadIdle", False),
    ("Fallback", True): ("FallbackEntered", True),
    ("Fallback", False): ("FallbackLeft", False),
    ("Paused", True): ("Paused", False),
    ("Paused", False): ("Resumed", False),
}
_COUNTDOWN = re.compile(r" \(backing off: [^)]*\)| not sent$")

Spawn = Callable[[Coroutine[Any, Any, None]], object]


def cause_of(error: str | None) -> str:
    """The failure's cause as an operator reads it: without the backoff's countdown."""
    return _COUNTDOWN.sub("", error or "unknown error")


def _iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def conditions_of(decision: Decision, errors: dict[str, str]) -> dict[str, tuple[bool, str, str]]:
    """type → (status, reason, message) for one decision and the triggers' failures."""
    return _shown(decision, _failing(errors))


def _failing(errors: dict[str, str]) -> str | None:
    """The Ready condition's message: each failing trigger's cause; None: none fails."""
    if not errors:
        return None
    return "; ".join(f"{name}: {cause}" for name, cause in sorted(errors.items()))


def _shown(decision: Decision, failing: str | None) -> dict[str, tuple[bool, str, str]]:
    """``conditions_of`` from the decision and ``_failing``'s message (what a pending
    status keeps: ``_Status``), in ``CONDITIONS`` order."""
    paused = decision.reason is Reason.PAUSED
    fallback = decision.reason is Reason.FALLBACK_ACTIVE
    return {
        "Ready": (True, "TriggersRead", "")
        if failing is None
        else (False, "TriggerError", failing),
        "Active": (True, "Active", decision.message)
        if decision.active
        else (False, "Idle", "every trigger at or below its activation level"),
        "Fallback": (True, "FallbackActive", decision.message)
        if fallback
        else (False, "NoFallback", ""),
        "Paused": (True, "PausedByAnnotation", decision.message)
        if paused
        else (False, "NotPaused", ""),
    }


class Reporter:
    """Conditions, the status annotation and the operator's Events, for every workload."""

    def __init__(
        self,
        spawn: Spawn,
        *,
        dry_run: bool,
        wall_clock: Callable[[], float],
        write_status: Callable[[Workload, Callable[[], dict[str, object]]], None] | None = None,
    ) -> None:
        self.spawn = spawn
        self.dry_run = dry_run
        self.wall_clock = wall_clock
        # how a status reaches the target, as the function that builds it: the loop's
        # StatusWriter (coalesced, lowest priority, built when written:
        # controller.statuses); a task per write without one
        self.write_status = write_status or (
            lambda w, build: self.spawn(w.target.write_status(build()))
        )
        # the last (status, lastTransitionTime) made per status, and the last conditions
        # made: shared while equal (``_flip``, ``decided``)
        self._flips: dict[bool, tuple[bool, str]] = {True: (True, ""), False: (False, "")}
        self._conditions: tuple[tuple[bool, str], ...] = ()

    def _event(self, w: Workload, reason: str, message: str, *, warning: bool = False) -> None:
        if not self.dry_run:
            self.spawn(w.target.record_event(reason, message, warning=warning))

    # ---- triggers ---------------------------------------------------------------------

    def trigger_failed(self, w: Workload, name: str, error: str | None) -> None:
        """A trigger could not be read: tell once per distinct cause."""
        cause = cause_of(error)
        if w.trigger_errors.get(name) == cause:
            return
        w.trigger_errors[name] = cause
        log_event(
            logger,
            "trigger failed",
            logging.WARNING,
            namespace=w.ref.namespace,
            workload=w.ref.name,
            trigger=name,
            error=cause,
        )
        self._event(w, "TriggerFailed", f"{name}: {cause}", warning=True)

    def triggers_read(self, w: Workload, spec: ScalingSpec, readings: list[Reading]) -> None:
        """After a cycle with failures known: which triggers read again (or are gone)."""
        read = {t.name for t, r in zip(spec.triggers, readings, strict=True) if r.value is not None}
        names = {t.name for t in spec.triggers}
        for name in [n for n in w.trigger_errors if n in read or n not in names]:
            del w.trigger_errors[name]
            if name in read:
                log_event(
                    logger,
                    "trigger recovered",
                    namespace=w.ref.namespace,
                    workload=w.ref.name,
                    trigger=name,
                )
                self._event(w, "TriggerRecovered", f"{name}: read again")

    # ---- decisions --------------------------------------------------------------------

    def decided(
        self, w: Workload, spec: ScalingSpec, decision: Decision, readings: list[Reading]
    ) -> None:
        """A decision that differs in substance from the last one reported: conditions
        (Events where one flipped) and the status annotation."""
        now = self.wall_clock()
        failing = _failing(w.trigger_errors)
        shown = _shown(decision, failing)
        conditions = []
        for (kind, (status, _, message)), before in zip(
            shown.items(), w.conditions or (None,) * len(CONDITIONS), strict=True
        ):
            if before is not None and before[0] == status:
                conditions.append(before)
            else:
                conditions.append(self._flip(status, now))
                # a flip; or a fallback already in force when first seen (a restart
                # repeats it: rare, and worth repeating), never an Event storm at start
                told = before is not None or (kind == "Fallback" and status)
                if told and (kind, status) in _EVENTS:
                    event, warning = _EVENTS[kind, status]
                    text = message or f"{kind} ended: {decision.message}"
                    log_event(
                        logger,
                        event,
                        logging.WARNING if warning else logging.INFO,
                        namespace=w.ref.namespace,
                        workload=w.ref.name,
                        message=text,
                    )
                    self._event(w, event, text, warning=warning)
        # One tuple, shared by every workload whose conditions flipped alike (at a start:
        # all), and given as is to the pending status: a dict and a copy of its times per
        # workload held ~2 MB at 10,000 workloads (docs/performance.md, goal 5).
        made = tuple(conditions)
        if made != w.conditions:
            if made != self._conditions:
                self._conditions = made
            w.conditions = self._conditions
        if not self.dry_run:
            self.write_status(w, _Status(spec, decision, readings, failing, w.conditions, now))

    def _flip(self, status: bool, now: float) -> tuple[bool, str]:
        """``(status, lastTransitionTime)`` for a condition flipping at ``now``. The one
        made last is given again while the second is the same: at a start every workload's
        four conditions flip in the same few seconds, and 40,000 equal tuples and time
        strings held ~6 MB at 10,000 workloads (docs/performance.md, goal 5)."""
        stamp = _iso(now)
        flip = self._flips[status]
        if flip[1] != stamp:
            flip = self._flips[status] = (status, stamp)
        return flip


@dataclass(frozen=True, slots=True)
class _Status:
    """A status annotation not yet built: the inputs it is built from, captured at the
    decision (``StatusWriter`` builds it when its turn comes, or drops it for a newer
    one). A slotted object of shared parts instead of a closure: its function, closure
    tuple, six cells and the conditions' dicts held ~6 MB of the 10,000 statuses pending
    after a start (docs/performance.md, goal 5)."""

    spec: ScalingSpec
    decision: Decision
    readings: list[Reading]
    failing: str | None
    conditions: tuple[tuple[bool, str], ...]
    at: float

    def __call__(self) -> dict[str, object]:
        shown = _shown(self.decision, self.failing)
        since = {kind: c[1] for kind, c in zip(CONDITIONS, self.conditions, strict=True)}
        return _status_doc(self.spec, self.decision, self.readings, shown, since, self.at)


def _status_doc(
    spec: ScalingSpec,
    decision: Decision,
    readings: list[Reading],
    shown: dict[str, tuple[bool, str, str]],
    since: dict[str, str],
    at: float,
) -> dict[str, object]:
    """The status annotation for one decision, with its conditions (``since``: each one's
    lastTransitionTime)."""
    conditions = []
    for kind, (status, reason, message) in shown.items():
        condition: dict[str, object] = {
            "type": kind,
            "status": "True" if status else "False",
            "reason": reason,
            "lastTransitionTime": since[kind],
        }
        if message:
            condition["message"] = message
        conditions.append(condition)
    doc = status_of(decision, readings, [t.name for t in spec.triggers], at)
    doc["conditions"] = conditions
    return doc
