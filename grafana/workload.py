"""The per-workload drill-down: load, replicas, the reason of each decision, the drain funnel.

The sidecars of a workload are found by pod name: a Deployment's pods are named
``<workload>-<hash>-<suffix>``.
"""

from __future__ import annotations

from autoscaler.metrics import DRAIN_STAGES
from grafana.panels import (
    RANGE,
    RATE,
    Json,
    Layout,
    annotation,
    bargauge,
    dashboard,
    dashed,
    query_variable,
    stat,
    state_timeline,
    targets,
    timeseries,
    value_text,
)


def workload() -> Json:
    w = 'namespace="$namespace", workload="$workload"'
    pods = 'namespace="$namespace", pod=~"$workload-.*"'
    lay = Layout()
    lay.row("Now")
    off_on = [value_text(0, "off", "green"), value_text(1, "active", "orange")]
    for title, description, queries, mappings in (
        ("Current replicas", "Replicas the workload has.",
         targets((f"max(queue_autoscaler_current_replicas{{{w}}})", "")), None),
        ("Desired replicas", "Replicas the last decision asked for.",
         targets((f"max(queue_autoscaler_desired_replicas{{{w}}})", "")), None),
        ("Min / max", "The min-replicas and max-replicas annotations.",
         targets((f"max(queue_autoscaler_min_replicas{{{w}}})", "min"),
                 (f"max(queue_autoscaler_max_replicas{{{w}}})", "max")), None),
        ("Backlog", "Queued messages over the workload's Redis triggers.",
         targets((f"sum(queue_autoscaler_backlog{{{w}}})", "")), None),
        ("Spec", "Whether the annotations parse (the Events say what is wrong).",
         targets((f"max(queue_autoscaler_spec_valid{{{w}}})", "")),
         [value_text(0, "invalid", "red"), value_text(1, "valid", "green")]),
        ("Fallback", "fallback-replicas in force after failed reads.",
         targets((f"max(queue_autoscaler_fallback_active{{{w}}})", "")), off_on),
    ):  # fmt: skip
        lay.add(stat(title, description, queries, mappings=mappings), w=4, h=4)
    lay.row("Load and replicas")
    lay.add(
        timeseries(
            "Backlog and in flight",
            "Per trigger: queued messages, messages held by consumers, and the load value "
            "the trigger sizes on (dashed; queued plus in flight with count-in-flight).",
            targets(
                (f"queue_autoscaler_backlog{{{w}}}", "{{trigger}} queued"),
                (f"queue_autoscaler_in_flight{{{w}}}", "{{trigger}} in flight"),
                (f"queue_autoscaler_metric_value{{{w}}}", "{{trigger}} load"),
            ),
            overrides=[dashed(".* load$")],
        )
    )
    lay.add(
        timeseries(
            "Desired vs current replicas",
            "Current, desired (dashed) and the min/max bounds.",
            targets(
                (f"max(queue_autoscaler_current_replicas{{{w}}})", "current"),
                (f"max(queue_autoscaler_desired_replicas{{{w}}})", "desired"),
                (f"max(queue_autoscaler_min_replicas{{{w}}})", "min"),
                (f"max(queue_autoscaler_max_replicas{{{w}}})", "max"),
            ),
            overrides=[dashed("^(desired|min|max)$")],
        )
    )
    lay.row("Decisions")
    lay.add(
        state_timeline(
            "Decision reason",
            "One row per reason, coloured while decisions gave that reason: the story of "
            "why the replica count moved (or did not).",
            targets(
                (
                    "count by (reason) "
                    f"(increase(queue_autoscaler_decisions_total{{{w}}}[{RATE}]) > 0)",
                    "{{reason}}",
                )
            ),
            [value_text(1, "decided", "blue")],
        ),
        w=24,
        h=7,
    )
    lay.add(
        timeseries(
            "Decisions by reason",
            "Decisions per interval, by reason.",
            targets(
                (
                    f"sum by (reason) (increase(queue_autoscaler_decisions_total{{{w}}}[{RATE}]))",
                    "{{reason}}",
                )
            ),
            stack=True,
            bars=True,
        )
    )
    lay.add(
        timeseries(
            "Scale events",
            "Replica changes written, by direction.",
            targets(
                (
                    "sum by (direction) "
                    f"(increase(queue_autoscaler_scale_events_total{{{w}}}[{RATE}]))",
                    "{{direction}}",
                )
            ),
            bars=True,
        )
    )
    lay.row("Drain funnel")
    funnel = [
        (
            f'sum(increase(queue_autoscaler_drains_total{{{w}, stage="{s}"}}[{RANGE}]))',
            s,
        )
        for s in DRAIN_STAGES
    ]
    funnel.append(
        (
            f"sum(increase(queue_autoscaler_undrained_pod_removals_total{{{w}}}[{RANGE}]))",
            "undrained pod removals",
        )
    )
    lay.add(
        bargauge(
            "Drain funnel (time range)",
            "Drains requested, then how each ended: acknowledged (every victim drained), "
            "timed_out (scaled down anyway), cancelled (load rose), aborted (error or "
            "controller stop). Undrained pod removals should stay 0.",
            targets(*funnel),
        ),
        w=8,
    )
    lay.add(
        timeseries(
            "Drains over time",
            "Drain stages per interval.",
            targets(
                (
                    f"sum by (stage) (increase(queue_autoscaler_drains_total{{{w}}}[{RATE}]))",
                    "{{stage}}",
                )
            ),
            bars=True,
        ),
        w=8,
    )
    lay.add(
        timeseries(
            "Sidecars by state",
            "The workload's sidecar consumers: running, draining (finishing what they "
            "hold) or drained (waiting to be removed).",
            targets(
                (
                    f"sum by (queue_consumer_state) (queue_consumer_state{{{pods}}})",
                    "{{queue_consumer_state}}",
                )
            ),
            stack=True,
        ),
        w=8,
    )
    lay.row("Sidecars and sources")
    lay.add(
        timeseries(
            "Messages by outcome",
            "What the workload's sidecars did with messages, per second.",
            targets(
                (
                    f"sum by (outcome) (rate(queue_consumer_messages_total{{{pods}}}[{RATE}]))",
                    "{{outcome}}",
                )
            ),
            unit="ops",
        ),
        w=8,
    )
    lay.add(
        timeseries(
            "In flight by pod",
            "Messages each sidecar holds now.",
            targets((f"sum by (pod) (queue_consumer_in_flight{{{pods}}})", "{{pod}}")),
        ),
        w=8,
    )
    lay.add(
        timeseries(
            "Source errors",
            "Failed reads per second by trigger.",
            targets(
                (
                    f"sum by (trigger) (rate(queue_autoscaler_source_errors_total{{{w}}}[{RATE}]))",
                    "{{trigger}}",
                )
            ),
            unit="ops",
        ),
        w=8,
    )
    return dashboard(
        "queue-autoscaler-workload",
        "queue-autoscaler / Workload",
        "One workload: load, replicas, the reason of each decision, and the drain funnel.",
        lay,
        [
            query_variable(
                "namespace",
                "Namespace",
                "label_values(queue_autoscaler_desired_replicas, namespace)",
            ),
            query_variable(
                "workload",
                "Workload",
                'label_values(queue_autoscaler_desired_replicas{namespace="$namespace"}, workload)',
            ),
        ],
        [
            annotation(
                "Scale events",
                "sum by (direction) "
                f"(increase(queue_autoscaler_scale_events_total{{{w}}}[1m])) > 0",
                "scaled {{direction}}",
                "blue",
                "direction",
            ),
            annotation(
                "Drain outcomes",
                f'sum by (stage) (increase(queue_autoscaler_drains_total{{{w}, stage!="requested"}}'
                "[1m])) > 0",
                "drain {{stage}}",
                "orange",
                "stage",
            ),
        ],
    )
