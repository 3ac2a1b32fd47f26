"""``autoscaler check``: validate workload annotations offline, or those of a live cluster.

A *workload* here is any object in the given YAML (multi-document; ``-`` is stdin; a
``kind: List`` is opened) that carries the label ``queue-autoscaler.io/enabled`` or an
annotation under ``queue-autoscaler.io/``. Labelled ``"true"``, its annotations go through
the controller's own parser (``config.parse_spec``) and the command prints either the
*effective spec* — every key with the value the controller will use, defaults included —
or every error, each naming its key. Annotations without the label, on the pod template,
or on a kind the controller does not scale are *warnings*: they are silently unused.

Exit codes: 0 all good (warnings allowed), 1 any error, 2 unreadable file, bad YAML or an
unreachable cluster (``cli.main`` maps ``InputError`` to 2).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from autoscaler.config import (
    ENABLED_LABEL,
    KEYS,
    PREFIX,
    STATUS_ANNOTATION,
    format_duration,
    parse_spec,
)
from autoscaler.errors import AutoscalerError, InputError, InvalidSpecError
from autoscaler.policy.spec import ScalingSpec

SCALED_KINDS = frozenset({"Deployment", "StatefulSet"})  # what the controller watches
# Stand-ins for a missing required key (and the key it needs), so that one missing key does
# not hide the other errors.
_STAND_INS = {
    "redis-list": {"redis-list": "stand-in", "messages-per-replica": "1"},
    "messages-per-replica": {"messages-per-replica": "1"},
    "prometheus-query": {"prometheus-query": "stand-in", "prometheus-target": "1"},
    "prometheus-target": {"prometheus-target": "1"},
}


@dataclass
class Report:
    """What ``check`` found for one workload."""

    source: str  # "FILE:LINE" or "cluster"
    kind: str
    name: str
    namespace: str | None = None
    spec: dict[str, str | None] | None = None
    errors: list[InvalidSpecError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.source}: {self.kind} {where}"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "check",
        help="validate queue-autoscaler annotations in manifests or in a cluster",
        description="Validate the queue-autoscaler.io/ annotations of workload manifests "
        "with the controller's own parser; print each workload's effective spec or every "
        "error with its key. Exit 1 on any error, 2 on an unreadable file or bad YAML.",
    )
    parser.add_argument("files", nargs="*", metavar="FILE", help="YAML manifests; - for stdin")
    parser.add_argument(
        "--cluster", action="store_true", help="check the labelled workloads of a live cluster"
    )
    parser.add_argument("--kubeconfig", help="with --cluster: kubeconfig file (default: usual)")
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="with --cluster: namespace to read (repeatable; default: all namespaces)",
    )
    parser.add_argument("--output", choices=("text", "json"), default="text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.cluster == bool(args.files):
        raise InputError("give FILE... or --cluster (not both)")
    if args.cluster:
        reports = [r for obj in _cluster_objects(args) if (r := check_object(obj, "cluster"))]
    else:
        reports = []
        for path in args.files:
            name = "<stdin>" if path == "-" else path
            for line, obj in load_objects(path):
                report = check_object(obj, f"{name}:{line}")
                if report is not None:
                    reports.append(report)
    text = format_json(reports) if args.output == "json" else format_text(reports)
    sys.stdout.write(text)
    return 1 if any(r.errors for r in reports) else 0


def _cluster_objects(args: argparse.Namespace) -> list[dict[str, Any]]:
    # Imported here: only autoscaler.kube may import the Kubernetes client, and file checks
    # must not pay for loading it. The package may re-export the function; listing has it.
    kube = importlib.import_module("autoscaler.kube")
    list_workloads = getattr(kube, "list_annotated_workloads", None)
    if list_workloads is None:
        list_workloads = importlib.import_module("autoscaler.kube.listing").list_annotated_workloads
    try:
        return list(list_workloads(args.kubeconfig, list(args.namespace)))
    except AutoscalerError as e:
        raise InputError(f"cannot list the cluster's workloads: {e}") from e


def load_objects(path: str) -> list[tuple[int, Any]]:
    """(line, object) for every non-empty document of ``path``; ``kind: List`` opened."""
    name = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{name}: cannot read: {e}") from e
    loader = yaml.SafeLoader(text)
    objects: list[tuple[int, Any]] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            doc = None if node is None else loader.construct_document(node)
            if node is None or doc is None:
                continue
            line = node.start_mark.line + 1
            if not isinstance(doc, dict):
                raise InputError(f"{name}:{line}: not a Kubernetes object (expected a mapping)")
            items = doc.get("items") if str(doc.get("kind", "")).endswith("List") else [doc]
            objects += [(line, item) for item in items or [] if isinstance(item, dict)]
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        what = "; ".join(str(p) for p in (e.context, e.problem) if p)
        raise InputError(f"{where}: bad YAML: {what}") from e
    except yaml.YAMLError as e:
        raise InputError(f"{name}: bad YAML: {e}") from e
    finally:
        loader.dispose()
    return objects


def _ours(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k.startswith(PREFIX) and k != STATUS_ANNOTATION}


def _dig(obj: Any, *keys: str) -> dict[str, Any]:
    for key in keys:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj if isinstance(obj, dict) else {}


def check_object(obj: Mapping[str, Any], source: str) -> Report | None:
    """The report for one object, or None when it has nothing of ours."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        return None
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    if not isinstance(labels, dict) or not isinstance(annotations, dict):
        return None
    ours = _ours(annotations)
    if ENABLED_LABEL not in labels and not ours:
        return None
    report = Report(
        source=source,
        kind=str(obj.get("kind") or "<no kind>"),
        name=str(metadata.get("name") or "<no name>"),
        namespace=metadata.get("namespace"),
    )
    label = labels.get(ENABLED_LABEL)
    if label != "true":
        shown = "missing" if label is None else repr(label)
        report.warnings.append(
            f'label {ENABLED_LABEL} is {shown}, not "true": the controller ignores this '
            f"workload and its {len(ours)} annotation(s)"
        )
        return report
    if report.kind not in SCALED_KINDS:
        report.warnings.append(
            f"kind {report.kind}: the controller scales only {' and '.join(sorted(SCALED_KINDS))}"
        )
    misplaced = sorted(_ours(_dig(obj, "spec", "template", "metadata", "annotations")))
    if misplaced:
        report.warnings.append(
            "annotations on the pod template are not read (put them on the workload's own "
            f"metadata): {', '.join(misplaced)}"
        )
    spec, report.errors = collect_errors(annotations)
    report.spec = render_spec(spec) if spec is not None else None
    return report


def collect_errors(
    annotations: Mapping[str, Any],
) -> tuple[ScalingSpec | None, list[InvalidSpecError]]:
    """Parse with ``parse_spec``; on an error drop (or stand in for) that key and go on.

    ``parse_spec`` stops at the first bad key; re-parsing without it reports the others.
    """
    remaining = dict(annotations)
    errors: list[InvalidSpecError] = []
    stand_ins: set[str] = set()
    for _ in range(len(remaining) + len(_STAND_INS) + 1):
        try:
            spec = parse_spec(remaining)
        except InvalidSpecError as e:
            if any(e.key == seen.key for seen in errors) or e.key in stand_ins:
                break  # a consequence of an error already reported
            errors.append(e)
            name = e.key.removeprefix(PREFIX)
            if e.key in remaining:
                del remaining[e.key]
            elif name in _STAND_INS:
                for needed, value in _STAND_INS[name].items():
                    if PREFIX + needed not in remaining:
                        remaining[PREFIX + needed] = value
                        stand_ins.add(PREFIX + needed)
            else:
                break
        else:
            return (None if errors else spec), errors
    return None, errors


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def _bool(value: bool) -> str:
    return "true" if value else "false"


def render_spec(spec: ScalingSpec) -> dict[str, str | None]:
    """Every annotation key (without prefix, in ``KEYS`` order) → its effective value.

    None means unset (no such trigger, no fallback, no rate-aware mode; a URL left to the
    controller's flag). Annotations yield at most one trigger of each kind; ``parse_spec``
    of the non-None values gives back ``spec``.
    """
    redis = spec.redis_triggers[0] if spec.redis_triggers else None
    prom = spec.prometheus_triggers[0] if spec.prometheus_triggers else None
    values: dict[str, str | None] = {
        "redis-list": ",".join(redis.lists) if redis else None,
        "redis-url": redis.redis_url if redis else None,
        "messages-per-replica": _number(redis.messages_per_replica) if redis else None,
        "activation-messages": _number(redis.activation_messages) if redis else None,
        "count-in-flight": _bool(redis.count_in_flight) if redis else None,
        "prometheus-url": prom.url if prom else None,
        "prometheus-query": prom.query if prom else None,
        "prometheus-target": _number(prom.target) if prom else None,
        "prometheus-activation": _number(prom.activation) if prom else None,
        "min-replicas": str(spec.min_replicas),
        "max-replicas": str(spec.max_replicas),
        "polling-interval": format_duration(spec.polling_interval_s),
        "tolerance": _number(spec.tolerance),
        "scale-down-stabilization": format_duration(spec.scale_down_stabilization_s),
        "scale-up-max-pods": str(spec.scale_up.max_pods),
        "scale-up-max-percent": _number(spec.scale_up.max_percent),
        "scale-up-period": format_duration(spec.scale_up.period_s),
        "cooldown": format_duration(spec.cooldown_s),
        "fallback-replicas": (
            None if spec.fallback_replicas is None else str(spec.fallback_replicas)
        ),
        "failure-threshold": str(spec.failure_threshold),
        "paused": _bool(spec.paused),
        "drain": _bool(spec.drain),
        "drain-timeout": format_duration(spec.drain_timeout_s),
        "target-drain-time": (
            None if spec.target_drain_time_s is None else format_duration(spec.target_drain_time_s)
        ),
    }
    return {key.name: values[key.name] for key in KEYS}


def _unset(name: str, spec: Mapping[str, str | None]) -> str:
    trigger_key = {"redis-url": "redis-list", "prometheus-url": "prometheus-query"}.get(name)
    if trigger_key and spec.get(trigger_key) is not None:
        return f"(controller's --{name})"
    return "unset"


def format_text(reports: list[Report]) -> str:
    lines: list[str] = []
    for report in reports:
        verdict = f"{len(report.errors)} error(s)" if report.errors else "ok"
        lines.append(f"{report.title}: {verdict}")
        lines += [f"  error: {e}" for e in report.errors]
        lines += [f"  warning: {w}" for w in report.warnings]
        if report.spec is not None:
            width = max(len(name) for name in report.spec)
            for name, value in report.spec.items():
                shown = value if value is not None else _unset(name, report.spec)
                lines.append(f"    {PREFIX}{name:<{width}}  {shown}")
    errors = sum(len(r.errors) for r in reports)
    warnings = sum(len(r.warnings) for r in reports)
    lines.append(f"checked {len(reports)} workload(s): {errors} error(s), {warnings} warning(s)")
    return "\n".join(lines) + "\n"


def format_json(reports: list[Report]) -> str:
    workloads = []
    for r in reports:
        errors = [
            {"key": e.key, "value": e.value, "expected": e.expected, "message": str(e)}
            for e in r.errors
        ]
        workloads.append(
            {"source": r.source, "kind": r.kind, "namespace": r.namespace, "name": r.name}
            | {"ok": not r.errors, "spec": r.spec, "errors": errors, "warnings": r.warnings}
        )
    summary = {
        "workloads": workloads,
        "errors": sum(len(r.errors) for r in reports),
        "warnings": sum(len(r.warnings) for r in reports),
    }
    return json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
