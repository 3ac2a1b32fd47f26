"""``autoscaler check``: validate workload annotations offline, or those of a live cluster.

A *workload* here is any object in the given YAML (multi-document; ``-`` is stdin; a
``kind: List`` is opened) that carries the label ``queue-autoscaler.io/enabled`` or an
annotation under ``queue-autoscaler.io/``. Labelled ``"true"``, its annotations go through
the controller's own parser (``annotations.parse_spec``) and the command prints either the
*effective spec* (``annotations.effective_values``: every key with the value the
controller will use, defaults included) or every error, each naming its key. Annotations
without the label, on the pod template, or on a kind the controller does not scale are
*warnings*: they are silently unused.

With ``--cluster``, each queue's Redis is also asked whether it can lose messages
(``redisqueue.read_durability``, as the controller and the sidecar do): neither AOF nor
RDB, or an eviction ``maxmemory-policy``, is a warning on every workload that uses it.

Also errors, as the controller would silently ignore them: a label or annotation whose
prefix is a near miss of ``queue-autoscaler.io/`` (``queue-autoscaller.io/…``). Every
error names the line of its annotation (YAML nodes keep their marks).

Exit codes: 0 all good (warnings allowed), 1 any error, 2 unreadable file, bad YAML (a
duplicate key included: Kubernetes rejects it, YAML would keep the last), a document that
is not a Kubernetes object, a file with no object, or an unreachable cluster (``cli.main``
maps ``InputError`` to 2). With ``--output json`` those still print a JSON document, its
``input_errors`` naming each, before exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from autoscaler.annotations import (
    ANNOTATION_PREFIX,
    ENABLED_LABEL,
    STATUS_ANNOTATION,
    effective_values,
    parse_spec,
)
from autoscaler.errors import AutoscalerError, InputError, InvalidSpecError
from autoscaler.policy.spec import ScalingSpec

SCALED_KINDS = frozenset({"Deployment", "StatefulSet"})  # what the controller watches
_DOMAIN = ANNOTATION_PREFIX.removesuffix("/")
NEAR_MISS = 0.8  # difflib ratio at or above which another prefix is taken for a typo of ours
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
    file: str = ""  # the file (or "cluster") the errors' lines refer to
    lines: dict[str, int] = field(default_factory=dict)  # annotation/label key → its line
    parsed: ScalingSpec | None = None  # the spec the controller would use (no error)

    def where(self, key: str) -> str:
        """``FILE:LINE`` of ``key`` (the object's when the key is absent or from a cluster)."""
        line = self.lines.get(key)
        return f"{self.file}:{line}" if line is not None else self.source

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
    parser.add_argument(
        "--kubeconfig",
        help="with --cluster: kubeconfig file (default: $KUBECONFIG, else in-cluster, "
        "else ~/.kube/config — as `autoscaler run`)",
    )
    parser.add_argument(
        "--namespace",
        action="append",
        default=[],
        help="with --cluster: namespace to read (repeatable; default: all namespaces)",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL"),
        help="with --cluster: the controller's --redis-url, for workloads without "
        "redis-url (default: $REDIS_URL); each queue's Redis is asked whether it can lose "
        "messages (persistence, eviction policy)",
    )
    parser.add_argument("--output", choices=("text", "json"), default="text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.cluster == bool(args.files):
        raise InputError("give FILE... or --cluster (not both)")
    reports: list[Report] = []
    input_errors: list[str] = []
    if args.cluster:
        reports = [r for obj in _cluster_objects(args) if (r := check_object(obj, "cluster"))]
        asyncio.run(warn_about_durability(reports, args.redis_url))
    for path in args.files:
        name = "<stdin>" if path == "-" else path
        try:
            loaded = load_objects(path)
        except InputError as e:
            if args.output != "json":
                raise
            input_errors.append(str(e))  # JSON still comes out: a pipe to jq must parse
            continue
        for line, obj, lines in loaded:
            report = check_object(obj, f"{name}:{line}", file=name, lines=lines)
            if report is not None:
                reports.append(report)
    if args.output == "json":
        sys.stdout.write(format_json(reports, input_errors))
    else:
        sys.stdout.write(format_text(reports))
    if input_errors:
        return 2
    return 1 if any(r.errors for r in reports) else 0


def _cluster_objects(args: argparse.Namespace) -> list[dict[str, Any]]:
    try:
        return asyncio.run(_list_cluster(args.kubeconfig, list(args.namespace)))
    except AutoscalerError as e:
        raise InputError(f"cannot list the cluster's workloads: {e}") from e


async def _list_cluster(kubeconfig: str | None, namespaces: list[str]) -> list[dict[str, Any]]:
    """The labelled workloads, through the controller's own client and selector (so
    ``check --cluster`` reaches the cluster ``run`` would, by the same kubeconfig rules)."""
    # Imported here, not for a cycle: building the Kubernetes client's API modules costs
    # seconds of CPU, which checking files must not pay.
    from autoscaler.kube import KubeClient, list_annotated_workloads

    async with await KubeClient.connect(kubeconfig) as kube:
        return await list_annotated_workloads(kube, namespaces)


def load_objects(path: str) -> list[tuple[int, Any, dict[str, int]]]:
    """(line, object, key lines) for every document of ``path``; ``kind: List`` opened.

    The key lines map each label and annotation key of the object to its line. Raises
    ``InputError`` for bad YAML, a duplicate key, a document that is not a Kubernetes
    object, or no object at all."""
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
    objects: list[tuple[int, Any, dict[str, int]]] = []
    documents = 0
    try:
        while loader.check_node():
            node = loader.get_node()
            doc = None if node is None else loader.construct_document(node)
            if node is None or doc is None:
                continue
            documents += 1
            _no_duplicate_keys(node, name)
            line = node.start_mark.line + 1
            if not isinstance(doc, dict) or not ("kind" in doc and "apiVersion" in doc):
                raise InputError(
                    f"{name}:{line}: not a Kubernetes object (expected a mapping with "
                    "apiVersion and kind)"
                )
            if str(doc.get("kind", "")).endswith("List"):
                items = _child(node, "items")
                pairs = list(zip(items.value, doc.get("items") or [], strict=False)) if isinstance(
                    items, yaml.SequenceNode
                ) else []  # fmt: skip
            else:
                pairs = [(node, doc)]
            objects += [
                (item_node.start_mark.line + 1, item, _key_lines(item_node))
                for item_node, item in pairs
                if isinstance(item, dict)
            ]
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        what = "; ".join(str(p) for p in (e.context, e.problem) if p)
        raise InputError(f"{where}: bad YAML: {what}") from e
    except yaml.YAMLError as e:
        raise InputError(f"{name}: bad YAML: {e}") from e
    finally:
        loader.dispose()
    if not documents:
        raise InputError(f"{name}: empty: no Kubernetes object in it")
    return objects


def _child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    """The value node of ``key`` in a mapping node (None when absent or not a mapping)."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                found: yaml.Node = value_node
                return found
    return None


def _key_lines(node: yaml.Node) -> dict[str, int]:
    """Each label and annotation key of an object node → its line."""
    lines: dict[str, int] = {}
    for part in ("labels", "annotations"):
        mapping = _child(_child(node, "metadata"), part)
        if isinstance(mapping, yaml.MappingNode):
            for key_node, _ in mapping.value:
                lines.setdefault(str(key_node.value), key_node.start_mark.line + 1)
    return lines


def _no_duplicate_keys(node: yaml.Node, name: str) -> None:
    """A key twice in one mapping is an error: YAML keeps the last silently, Kubernetes
    rejects the object (strict decoding)."""
    stack = [node]
    while stack:
        current = stack.pop()
        if isinstance(current, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key_node, value_node in current.value:
                line = key_node.start_mark.line + 1
                if isinstance(key_node, yaml.ScalarNode) and key_node.value != "<<":
                    if key_node.value in seen:
                        raise InputError(
                            f"{name}:{line}: duplicate key {key_node.value!r} (first on line "
                            f"{seen[key_node.value]}): Kubernetes rejects it"
                        )
                    seen[key_node.value] = line
                stack.append(value_node)
        elif isinstance(current, yaml.SequenceNode):
            stack.extend(current.value)


def _ours(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in mapping.items()
        if k.startswith(ANNOTATION_PREFIX) and k != STATUS_ANNOTATION
    }


def _dig(obj: Any, *keys: str) -> dict[str, Any]:
    for key in keys:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj if isinstance(obj, dict) else {}


def _near_misses(keys: list[str]) -> list[str]:
    """Keys whose prefix is almost ours (``queue-autoscaller.io/…``): a typo the
    controller would silently ignore."""
    out = []
    for key in keys:
        domain = key.split("/", 1)[0] if "/" in key else ""
        near = difflib.SequenceMatcher(None, domain, _DOMAIN).ratio() >= NEAR_MISS
        if domain and domain != _DOMAIN and near:
            out.append(key)
    return out


def check_object(
    obj: Mapping[str, Any], source: str, *, file: str = "", lines: Mapping[str, int] = {}
) -> Report | None:
    """The report for one object, or None when it has nothing of ours."""
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        return None
    labels = metadata.get("labels") or {}
    annotations = metadata.get("annotations") or {}
    if not isinstance(labels, dict) or not isinstance(annotations, dict):
        return None
    ours = _ours(annotations)
    typos = _near_misses([str(k) for k in (*labels, *annotations)])
    if ENABLED_LABEL not in labels and not ours and not typos:
        return None
    report = Report(
        source=source,
        kind=str(obj.get("kind") or "<no kind>"),
        name=str(metadata.get("name") or "<no name>"),
        namespace=metadata.get("namespace"),
        file=file or source,
        lines=dict(lines),
    )
    for key in typos:
        fixed = _DOMAIN + "/" + key.split("/", 1)[1]
        value = str(annotations.get(key, labels.get(key, "")))
        report.errors.append(InvalidSpecError(
            key, value, f"the prefix {ANNOTATION_PREFIX} (did you mean {fixed}?): with this "
            "one the controller ignores it"))  # fmt: skip
    if typos and ENABLED_LABEL not in labels and not ours:
        return report
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
    spec, errors = collect_errors(annotations)
    report.errors += errors
    report.spec = effective_values(spec) if spec is not None and not report.errors else None
    report.parsed = spec if report.spec is not None else None
    return report


async def warn_about_durability(reports: list[Report], redis_url: str | None) -> None:
    """A warning on each report whose queue's Redis can lose messages (one reading per
    server; a server that cannot be read is a warning too, never an error)."""
    # Imported here: checking files offline needs no Redis client (~45 ms of imports).
    from autoscaler.redisconn import make_client
    from autoscaler.redisqueue import read_durability
    from autoscaler.remote import redact_url

    users: dict[str, list[Report]] = {}
    for report in reports:
        triggers = report.parsed.redis_triggers if report.parsed is not None else ()
        for url in dict.fromkeys(t.redis_url or redis_url for t in triggers):
            if url is not None:
                users.setdefault(url, []).append(report)
    for url, members in users.items():
        shown = redact_url(url)
        try:
            client = make_client(url)
            try:
                found = (await read_durability(client)).warnings()
            finally:
                await client.aclose()
        except AutoscalerError as e:
            found = [f"cannot read its persistence settings: {e}"]
        for report in members:
            report.warnings += [f"redis {shown}: {w}" for w in found]


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
            name = e.key.removeprefix(ANNOTATION_PREFIX)
            if e.key in remaining:
                del remaining[e.key]  # a bad required key: stand in for it too, below
            elif name not in _STAND_INS:
                break
            for needed, value in _STAND_INS.get(name, {}).items():
                if ANNOTATION_PREFIX + needed not in remaining:
                    remaining[ANNOTATION_PREFIX + needed] = value
                    stand_ins.add(ANNOTATION_PREFIX + needed)
        else:
            return (None if errors else spec), errors
    return None, errors


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
        lines += [f"  {report.where(e.key)}: error: {e}" for e in report.errors]
        lines += [f"  warning: {w}" for w in report.warnings]
        if report.spec is not None:
            width = max(len(name) for name in report.spec)
            for name, value in report.spec.items():
                shown = value if value is not None else _unset(name, report.spec)
                lines.append(f"    {ANNOTATION_PREFIX}{name:<{width}}  {shown}")
    errors = sum(len(r.errors) for r in reports)
    warnings = sum(len(r.warnings) for r in reports)
    lines.append(f"checked {len(reports)} workload(s): {errors} error(s), {warnings} warning(s)")
    return "\n".join(lines) + "\n"


def format_json(reports: list[Report], input_errors: list[str] | None = None) -> str:
    workloads = []
    for r in reports:
        errors = [
            {"key": e.key, "value": e.value, "expected": e.expected, "message": str(e)}
            | {"where": r.where(e.key)}
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
        "input_errors": list(input_errors or []),
    }
    return json.dumps(summary, indent=2, ensure_ascii=False) + "\n"
