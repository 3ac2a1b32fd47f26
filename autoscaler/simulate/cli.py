"""``autoscaler simulate``: flags, the spec file, and the output (table, JSON, plot).

The spec file is YAML, a mapping of annotation keys (with or without the
``queue-autoscaler.io/`` prefix) to scalars, exactly what would go on the Deployment::

    redis-list: jobs
    messages-per-replica: 10
    scale-up-max-pods: 20

Scalars are passed to :func:`autoscaler.annotations.parse_spec` as the text written (``5m``
stays ``5m``, ``true`` stays ``true``), so a spec file and the annotations it mirrors
parse the same way. Every error names the file and line, or the flag.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import yaml

from autoscaler.annotations import ANNOTATION_PREFIX, parse_spec
from autoscaler.argtypes import plot_file
from autoscaler.errors import InputError, InvalidSpecError
from autoscaler.policy import ScalingSpec
from autoscaler.simulate import Params, compare
from autoscaler.simulate.keda import KedaSettings
from autoscaler.simulate.ours import check_spec, default_spec
from autoscaler.simulate.report import legend, plot, summarize, table
from autoscaler.simulate.trace import BUNDLED, Trace, load_trace

DEFAULT_TRACE = "burst"
PROGRESS_AFTER_S = 2.0  # a run shorter than this shows no progress at all


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="replay a workload trace through our policy and a KEDA+HPA baseline",
        description="Replay a trace (messages arriving per second) through the scaling "
        "policy, with drain-before-scale-down, and through KEDA + HPA with their documented "
        "defaults; print what each cost (replica-seconds) and what the queue waited.",
        epilog="columns of the table:\n" + legend(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--trace",
        action="append",
        metavar="FILE.csv|NAME",
        help=f"CSV with header t_s,arrivals, or a bundled trace ({', '.join(BUNDLED)}); "
        f"repeat for several (JSON then maps trace name → result). Default: {DEFAULT_TRACE}",
    )
    parser.add_argument(
        "--spec",
        metavar="FILE.yaml",
        help="annotation keys → values, prefix optional (default: redis-list queue, "
        "messages-per-replica 10, every other key at its default)",
    )
    parser.add_argument(
        "--service-time",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="seconds one message holds one slot (default 1)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        metavar="N",
        help="message slots per replica (default 1)",
    )
    parser.add_argument(
        "--startup-delay",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="from a replica's request to its first message (default 10)",
    )
    parser.add_argument(
        "--start",
        metavar="ISO-TIME",
        help="the trace's t=0 in the calendar, e.g. 2026-12-07T07:30 (in the spec's "
        "schedule-timezone unless it carries an offset): replays the spec's schedule "
        "floors; without it a schedule is not applied",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--plot",
        type=plot_file,
        metavar="FILE.png|.svg|.pdf",
        help="draw arrivals, backlog, replicas and replica-seconds over time for both "
        "policies (format from the extension)",
    )
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    params = Params(args.service_time, args.concurrency, args.startup_delay)
    params.ticks_per_s()  # validates the flags before any file is read
    spec = load_spec(Path(args.spec)) if args.spec else default_spec()
    check_spec(spec, args.spec or "the built-in spec")
    start = start_time(args.start, spec)
    traces = [load_trace(name) for name in args.trace or [DEFAULT_TRACE]]
    runs = [
        (_name(trace), trace, compare(trace, spec, params, _Progress(_name(trace)), start))
        for trace in traces
    ]
    if args.plot is not None:
        plot(runs, args.plot)
        print(f"simulate: plot written to {args.plot}", file=sys.stderr)
    documents = {
        name: {
            "inputs": _inputs(trace, spec, params, args.spec),
            "policies": {p: summarize(r, trace.first_arrival_s) for p, r in results.items()},
        }
        for name, trace, results in runs
    }
    if args.json:
        single = len(documents) == 1
        print(
            json.dumps(
                next(iter(documents.values())) if single else {"traces": documents}, indent=2
            )
        )
    else:
        print(_heading(spec, params, args.spec))
        print(table([(name, doc["policies"]) for name, doc in documents.items()]))
    return 0


class _Progress:
    """``policy NN%`` on stderr every couple of seconds, once a run has taken that long
    (a year-long trace replays for a while; stdout stays the table or the JSON)."""

    def __init__(self, trace: str) -> None:
        self.trace = trace
        self.next_at = time.monotonic() + PROGRESS_AFTER_S

    def __call__(self, policy: str, share: float) -> None:
        now = time.monotonic()
        if now >= self.next_at:
            self.next_at = now + PROGRESS_AFTER_S
            print(f"simulate: {self.trace}: {policy} {share:.0%} of the trace replayed",
                  file=sys.stderr, flush=True)  # fmt: skip


def start_time(text: str | None, spec: ScalingSpec) -> float | None:
    """``--start`` as epoch seconds; a time without an offset is in the schedule's zone."""
    if text is None:
        if spec.schedule is not None:
            print(
                "simulate: the spec has a schedule; it is replayed only with --start "
                "(the trace's t=0 in the calendar)",
                file=sys.stderr,
            )
        return None
    try:
        at = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(
            f"--start: {text!r}: expected an ISO 8601 time such as 2026-12-07T07:30 "
            "or 2026-12-07T07:30+01:00"
        ) from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=ZoneInfo(spec.schedule_timezone))
    return at.timestamp()


def load_spec(path: Path) -> ScalingSpec:
    """A YAML spec file → ScalingSpec; errors name the file and the line of the key."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot read: {e}") from e
    mapping, lines = _yaml_mapping(text, path)
    try:
        return parse_spec(mapping, allow_bare_keys=True, source=str(path))
    except InvalidSpecError as e:
        line = lines.get(e.key) or lines.get(e.key.removeprefix(ANNOTATION_PREFIX)) or 1
        raise InputError(f"{path}:{line}: {e}") from None


def _yaml_mapping(text: str, path: Path) -> tuple[dict[str, str], dict[str, int]]:
    """Keys → scalar text as written, and keys → line (YAML nodes keep their marks)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e)
        raise InputError(f"{where}: not valid YAML: {problem}") from None
    if root is None:
        raise InputError(f"{path}: empty: expected a mapping of spec keys to values")
    if not isinstance(root, yaml.MappingNode):
        raise InputError(f"{path}:{root.start_mark.line + 1}: expected a mapping of key: value")
    mapping: dict[str, str] = {}
    lines: dict[str, int] = {}
    for key_node, value_node in root.value:
        line = key_node.start_mark.line + 1
        if not isinstance(key_node, yaml.ScalarNode):
            raise InputError(f"{path}:{line}: a key must be a plain name")
        key = str(key_node.value)
        if key in mapping:
            raise InputError(f"{path}:{line}: {key}: duplicate key (first on line {lines[key]})")
        mapping[key], lines[key] = _scalar(value_node, f"{path}:{line}: {key}"), line
    return mapping, lines


def _scalar(node: yaml.Node, where: str) -> str:
    """The value's text; a list of scalars (``redis-list: [a, b]``) joins with commas."""
    if isinstance(node, yaml.ScalarNode):
        return str(node.value)
    if isinstance(node, yaml.SequenceNode) and all(
        isinstance(item, yaml.ScalarNode) for item in node.value
    ):
        return ",".join(str(item.value) for item in node.value)
    raise InputError(f"{where}: expected a single value, got a nested structure")


def _name(trace: Trace) -> str:
    return (
        trace.source.removeprefix("<bundled ")
        .removesuffix(">")
        .rsplit("/", 1)[-1]
        .removesuffix(".csv")
    )


def _inputs(trace: Trace, spec: ScalingSpec, params: Params, spec_path: str | None) -> Any:
    return {
        "trace": trace.source,
        "messages": trace.total,
        "duration_s": trace.end_s,
        "service_time_s": params.service_time_s,
        "concurrency": params.concurrency,
        "startup_delay_s": params.startup_delay_s,
        "spec": spec_path or "built-in",
        "queue_autoscaler": _spec_summary(spec),
        "keda_hpa": asdict(KedaSettings.like(spec)),
    }


def _spec_summary(spec: ScalingSpec) -> dict[str, Any]:
    trigger = spec.redis_triggers[0]
    return {
        "messages_per_replica": trigger.messages_per_replica,
        "count_in_flight": trigger.count_in_flight,
        "min_replicas": spec.min_replicas,
        "max_replicas": spec.max_replicas,
        "polling_interval_s": spec.polling_interval_s,
        "scale_up": asdict(spec.scale_up),
        "scale_down_stabilization_s": spec.scale_down_stabilization_s,
        "cooldown_s": spec.cooldown_s,
        "target_drain_time_s": spec.target_drain_time_s,
    }


def _heading(spec: ScalingSpec, params: Params, spec_path: str | None) -> str:
    summary = _spec_summary(spec)
    up = spec.scale_up
    return (
        f"service {params.service_time_s:g} s × {params.concurrency} slot(s) per replica, "
        f"startup {params.startup_delay_s:g} s; spec {spec_path or 'built-in'}: "
        f"{summary['messages_per_replica']:g} msgs/replica, poll {spec.polling_interval_s:g} s, "
        f"up +{up.max_pods}/+{up.max_percent:g}% per {up.period_s:g} s, "
        f"down window {spec.scale_down_stabilization_s:g} s, cooldown {spec.cooldown_s:g} s"
        + (f", drain in {spec.target_drain_time_s:g} s" if spec.target_drain_time_s else "")
        + "\n"
    )
