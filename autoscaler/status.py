"""``autoscaler status`` (also ``kubectl queue-autoscaler status``): every workload at a glance.

One line per annotated workload, from one listing of the cluster (the kubeconfig rules of
``autoscaler run``; Kubernetes is reached through ``autoscaler.kube`` only):

NAMESPACE, NAME; MIN and MAX (the annotations); CURRENT (pods the workload has,
``status.replicas``); DESIRED, BACKLOG and IN-FLIGHT (the controller's last decision, from
the ``queue-autoscaler.io/status`` annotation — written when a decision changes in
substance, so they are as of that decision, not live); TRIGGERS (kinds: ``redis``,
``redis-stream``, ``prometheus``, plus ``schedule`` and ``memory`` floors); STATE; REASON
(the decision's reason, or the bad key); AGE (of the workload).

STATE, the first that holds: ``Invalid`` (the annotations do not parse: ``autoscaler
check`` says why), ``Paused``, ``Fallback``, ``Draining`` (the decision is a scale-down
with ``drain``: consumers are being drained before the pods go), ``Active``, ``Idle``;
``Pending`` before the controller's first decision.

``-o wide`` adds the conditions (READY ACTIVE FALLBACK PAUSED) and the message; ``-o json``
prints every field, the conditions included, as one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from autoscaler.annotations import ANNOTATION_PREFIX, STATUS_ANNOTATION, parse_spec
from autoscaler.errors import AutoscalerError, InputError, InvalidSpecError
from autoscaler.policy import ScalingSpec

COLUMNS = (
    "NAMESPACE", "NAME", "MIN", "MAX", "CURRENT", "DESIRED", "BACKLOG", "IN-FLIGHT",
    "TRIGGERS", "STATE", "REASON", "AGE",
)  # fmt: skip
WIDE = ("READY", "ACTIVE", "FALLBACK", "PAUSED", "MESSAGE")
_TRIGGER_KINDS = {"RedisTrigger": "redis", "RedisStreamTrigger": "redis-stream"}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "status",
        help="every annotated workload at a glance (also: kubectl queue-autoscaler status)",
        description="List the annotated workloads of a cluster: bounds, replicas, the "
        "controller's last decision, backlog, state and why.",
    )
    parser.add_argument(
        "--kubeconfig",
        help="kubeconfig file (default: $KUBECONFIG, else in-cluster, else ~/.kube/config)",
    )
    parser.add_argument("--context", help="kubeconfig context (default: the current one)")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", help="this namespace (default: the kubeconfig context's)"
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    parser.add_argument(
        "-o", "--output", choices=("wide", "json"), help="wide: conditions and message too"
    )
    parser.set_defaults(func=main)


@dataclass
class Row:
    """One workload as ``status`` shows it (``-o json`` prints these fields)."""

    namespace: str
    name: str
    kind: str
    min: int | None
    max: int | None
    current: int | None
    desired: int | None
    backlog: float | None
    in_flight: float | None
    triggers: list[str]
    state: str
    reason: str
    message: str
    age_s: float | None
    conditions: list[dict[str, Any]] = field(default_factory=list)

    def cells(self, wide: bool) -> list[str]:
        out = [
            self.namespace, self.name, _text(self.min), _text(self.max), _text(self.current),
            _text(self.desired), _text(self.backlog), _text(self.in_flight),
            ",".join(self.triggers) or "-", self.state, self.reason or "-", _age(self.age_s),
        ]  # fmt: skip
        if wide:
            by_type = {c.get("type"): c.get("status", "Unknown") for c in self.conditions}
            out += [
                str(by_type.get(t, "Unknown")) for t in ("Ready", "Active", "Fallback", "Paused")
            ]
            out.append(self.message or "-")
        return out


def _text(value: float | None) -> str:
    if value is None:
        return "-"
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _age(seconds: float | None) -> str:
    """kubectl's short form: 45s, 12m, 5h, 3d."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size or (unit == "m" and seconds >= size):
            return f"{int(seconds // size)}{unit}"
    return f"{max(0, int(seconds))}s"


def _timestamp(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _status_doc(annotations: Mapping[str, str]) -> dict[str, Any]:
    try:
        doc = json.loads(annotations.get(STATUS_ANNOTATION) or "{}")
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _triggers(spec: ScalingSpec) -> list[str]:
    kinds = [_TRIGGER_KINDS.get(type(t).__name__, "prometheus") for t in spec.triggers]
    if spec.schedule is not None:
        kinds.append("schedule")
    if any(t.memory_high is not None for t in spec.redis_triggers):
        kinds.append("memory")
    return list(dict.fromkeys(kinds))


def _state(spec: ScalingSpec, doc: Mapping[str, Any], current: int | None) -> str:
    conditions = {c.get("type"): c.get("status") for c in doc.get("conditions") or ()}
    if spec.paused or spec.paused_replicas is not None or conditions.get("Paused") == "True":
        return "Paused"
    if not doc:
        return "Pending"
    if conditions.get("Fallback") == "True" or doc.get("reason") == "FallbackActive":
        return "Fallback"
    desired = doc.get("desired")
    shown = current if current is not None else doc.get("current")
    if spec.drain and isinstance(desired, int) and shown is not None and desired < shown:
        return "Draining"
    active = conditions.get("Active")
    if active is None:
        active = "True" if doc.get("active", True) else "False"
    return "Active" if active == "True" else "Idle"


def row_of(obj: Mapping[str, Any], now: float) -> Row:
    """The row of one workload object (as the API lists it). Pure: ``now`` is passed in."""
    meta = obj.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    created = _timestamp(meta.get("creationTimestamp"))
    replicas = (obj.get("status") or {}).get("replicas")
    current = int(replicas) if isinstance(replicas, int) else 0
    doc = _status_doc(annotations)
    row = Row(
        namespace=meta.get("namespace", ""),
        name=meta.get("name", ""),
        kind=obj.get("kind", "Deployment"),
        min=None, max=None, current=current,
        desired=doc.get("desired") if isinstance(doc.get("desired"), int) else None,
        backlog=doc.get("backlog"), in_flight=doc.get("inFlight"),
        triggers=[], state="Pending", reason=str(doc.get("reason") or ""),
        message=str(doc.get("message") or ""),
        age_s=None if created is None else now - created,
        conditions=list(doc.get("conditions") or []),
    )  # fmt: skip
    ours = {k: v for k, v in annotations.items() if k.startswith(ANNOTATION_PREFIX)}
    try:
        spec = parse_spec(ours)
    except InvalidSpecError as e:
        row.state, row.reason, row.message = "Invalid", "InvalidSpec", str(e)
        return row
    row.min, row.max, row.triggers = spec.min_replicas, spec.max_replicas, _triggers(spec)
    row.state = _state(spec, doc, current)
    return row


def render(rows: Sequence[Row], wide: bool = False) -> str:
    """Columns padded like kubectl's (three spaces between columns)."""
    header = list(COLUMNS) + (list(WIDE) if wide else [])
    table = [header] + [r.cells(wide) for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    return "\n".join(
        "   ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in table
    )


async def _list(args: argparse.Namespace) -> tuple[list[dict[str, Any]], str | None]:
    # Imported here: building the Kubernetes client's API modules costs seconds of CPU.
    from autoscaler.kube import KubeClient, list_annotated_workloads
    from autoscaler.kube.context import context_namespace

    namespace = None
    if not args.all_namespaces:
        namespace = args.namespace or context_namespace(args.kubeconfig, args.context)
    async with await KubeClient.connect(args.kubeconfig, context=args.context) as kube:
        objects = await list_annotated_workloads(kube, [namespace] if namespace else [])
    return objects, namespace


def main(args: argparse.Namespace) -> int:
    try:
        objects, namespace = asyncio.run(_list(args))
    except AutoscalerError as e:
        raise InputError(str(e)) from e
    now = dt.datetime.now(dt.UTC).timestamp()
    rows = sorted((row_of(o, now) for o in objects), key=lambda r: (r.namespace, r.name))
    if args.output == "json":
        print(json.dumps({"workloads": [asdict(r) for r in rows]}, indent=2))
        return 0
    if not rows:
        where = f"in namespace {namespace}" if namespace else "in any namespace"
        print(f"No annotated workloads found {where}.", file=sys.stderr)
        return 0
    print(render(rows, wide=args.output == "wide"))
    return 0
