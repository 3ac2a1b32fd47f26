"""The three dashboards: overview, per-workload drill-down, sidecar consumers.

They use exactly the series of ``autoscaler.metrics`` (``queue_autoscaler_*``, labels
``namespace``/``workload``/``trigger`` — the controller's PodMonitor keeps them with
``honorLabels``) and ``autoscaler.consumer.metrics`` (``queue_consumer_*``, label
``queue``; ``namespace`` and ``pod`` come from the scrape). The sidecars of a workload are
found by pod name: a Deployment's pods are named ``<workload>-<hash>-<suffix>``.
"""

from __future__ import annotations

from autoscaler.metrics import DRAIN_STAGES
from grafana.panels import (
    Json,
    Layout,
    annotation,
    bargauge,
    dashboard,
    dashed,
    heatmap,
    query_variable,
    right_axis,
    stat,
    state_timeline,
    table,
    target,
    targets,
    timeseries,
    value_text,
)

RATE = "$__rate_interval"
RANGE = "$__range"
Thresholds = list[tuple[float | None, str]]
RED_FROM_1: Thresholds = [(None, "green"), (1.0, "red")]


def overview() -> Json:
    ns = 'namespace=~"$namespace"'
    by = "namespace, workload"
    name = "{{namespace}}/{{workload}}"
    lay = Layout()
    lay.row("Workloads")
    for title, description, expr, thresholds in (
        ("Workloads", "Annotated workloads the controller knows.",
         "max(queue_autoscaler_workloads)", None),
        ("Leader", "Controllers leading now: 1 is right, 0 means nobody scales, 2 is a "
         "split brain.", "sum(queue_autoscaler_leader)", [(None, "red"), (1, "green"), (2, "red")]),
        ("Invalid specs", "Workloads whose annotations do not parse (see their Events).",
         f"sum(1 - queue_autoscaler_spec_valid{{{ns}}})", RED_FROM_1),
        ("Fallback active", "Workloads held at fallback-replicas after failed reads.",
         f"sum(queue_autoscaler_fallback_active{{{ns}}})", [(None, "green"), (1, "orange")]),
        ("Backlog", "Queued messages over every Redis trigger.",
         f"sum(queue_autoscaler_backlog{{{ns}}})", None),
        ("Replicas", "Current replicas over every workload.",
         f"sum(queue_autoscaler_current_replicas{{{ns}}})", None),
    ):  # fmt: skip
        lay.add(stat(title, description, [target(expr)], thresholds=thresholds), w=4, h=4)
    columns = [
        ("Backlog", f"sum by ({by}) (queue_autoscaler_backlog{{{ns}}})"),
        ("In flight", f"sum by ({by}) (queue_autoscaler_in_flight{{{ns}}})"),
        ("Current", f"max by ({by}) (queue_autoscaler_current_replicas{{{ns}}})"),
        ("Desired", f"max by ({by}) (queue_autoscaler_desired_replicas{{{ns}}})"),
        ("Max", f"max by ({by}) (queue_autoscaler_max_replicas{{{ns}}})"),
        ("Spec valid", f"max by ({by}) (queue_autoscaler_spec_valid{{{ns}}})"),
    ]
    queries = targets(*((expr, "") for _, expr in columns))
    renames = {
        f"Value #{q['refId']}": label for q, (label, _) in zip(queries, columns, strict=True)
    }
    lay.add(
        table("Workloads", "One row per workload: its load and replicas now.", queries, renames),
        w=24,
        h=8,
    )
    lay.row("Backlog and replicas")
    lay.add(
        timeseries(
            "Backlog vs replicas",
            "Queued messages (left axis) against the replicas working on them (right axis).",
            targets(
                (f"sum by ({by}) (queue_autoscaler_backlog{{{ns}}})", f"{name} backlog"),
                (f"max by ({by}) (queue_autoscaler_current_replicas{{{ns}}})", f"{name} replicas"),
            ),
            overrides=[right_axis(".* replicas$")],
        )
    )
    lay.add(
        timeseries(
            "Desired vs current replicas",
            "What the last decision asked for (dashed) and what the workload has.",
            targets(
                (f"max by ({by}) (queue_autoscaler_current_replicas{{{ns}}})", f"{name} current"),
                (f"max by ({by}) (queue_autoscaler_desired_replicas{{{ns}}})", f"{name} desired"),
            ),
            overrides=[dashed(".* desired$")],
        )
    )
    lay.row("Decisions")
    lay.add(
        timeseries(
            "Decisions by reason",
            "Every cycle decides each due workload; the reason says why the count is what "
            "it is (see docs/dashboards.md).",
            targets(
                (
                    f"sum by (reason) (increase(queue_autoscaler_decisions_total{{{ns}}}[{RATE}]))",
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
            "Replica changes written, by workload and direction.",
            targets(
                (
                    f"sum by ({by}, direction) "
                    f"(increase(queue_autoscaler_scale_events_total{{{ns}}}[{RATE}]))",
                    f"{name} {{{{direction}}}}",
                )
            ),
            bars=True,
        )
    )
    lay.row("Errors")
    lay.add(
        timeseries(
            "Source errors",
            "Failed trigger reads per second: the workload holds its replicas meanwhile.",
            targets(
                (
                    f"sum by ({by}, trigger) "
                    f"(rate(queue_autoscaler_source_errors_total{{{ns}}}[{RATE}]))",
                    f"{name} {{{{trigger}}}}",
                )
            ),
            unit="ops",
        )
    )
    lay.add(
        timeseries(
            "Drain problems",
            "Drains that timed out, were cancelled or aborted, and pods removed that were "
            "not the drained ones.",
            targets(
                (
                    f"sum by ({by}, stage) (increase(queue_autoscaler_drains_total"
                    f'{{{ns}, stage=~"timed_out|cancelled|aborted"}}[{RATE}]))',
                    f"{name} {{{{stage}}}}",
                ),
                (
                    f"sum by ({by}) "
                    f"(increase(queue_autoscaler_undrained_pod_removals_total{{{ns}}}[{RATE}]))",
                    f"{name} undrained removals",
                ),
            ),
            bars=True,
        )
    )
    lay.add(
        timeseries(
            "Dead-lettered and reaped messages",
            "Messages sidecars or the reaper dead-lettered, and messages of dead consumers "
            "the reaper returned to their queue.",
            targets(
                (
                    "sum by (queue) (increase(queue_consumer_messages_total"
                    f'{{{ns}, outcome="dead_lettered"}}[{RATE}]))',
                    "{{queue}} dead-lettered by sidecars",
                ),
                (
                    f"sum by (queue) (increase(queue_autoscaler_dead_lettered_total[{RATE}]))",
                    "{{queue}} dead-lettered by the reaper",
                ),
                (
                    f"sum by (queue) (increase(queue_autoscaler_reaped_messages_total[{RATE}]))",
                    "{{queue}} reaped",
                ),
            ),
            bars=True,
        )
    )
    lay.add(
        timeseries(
            "Kubernetes API requests",
            "Requests per second by verb and status code (error: no answer).",
            targets(
                (
                    f"sum by (verb, code) (rate(queue_autoscaler_kube_requests_total[{RATE}]))",
                    "{{verb}} {{code}}",
                )
            ),
            unit="reqps",
        )
    )
    lay.add(
        timeseries(
            "Controller cycle duration",
            "Time of one read-decide cycle over every due workload.",
            targets(
                *(
                    (
                        f"histogram_quantile({q}, sum by (le) "
                        f"(rate(queue_autoscaler_loop_duration_seconds_bucket[{RATE}])))",
                        f"p{round(q * 100)}",
                    )
                    for q in (0.5, 0.99)
                )
            ),
            unit="s",
        )
    )
    return dashboard(
        "queue-autoscaler-overview",
        "queue-autoscaler / Overview",
        "Every workload the controller scales: load, replicas, decisions and errors.",
        lay,
        [
            query_variable(
                "namespace",
                "Namespace",
                "label_values(queue_autoscaler_desired_replicas, namespace)",
                multi=True,
                include_all=True,
            )
        ],
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


def sidecar() -> Json:
    c = 'namespace=~"$namespace", queue=~"$queue"'
    lay = Layout()
    lay.row("Throughput")
    for title, description, expr, thresholds in (
        ("Consumers", "Sidecar consumers scraped now.",
         f"count(queue_consumer_in_flight{{{c}}})", None),
        ("Acked per second", "Messages processed and acknowledged per second.",
         f'sum(rate(queue_consumer_messages_total{{{c}, outcome="acked"}}[{RATE}]))', None),
        ("In flight", "Messages held by all sidecars now.",
         f"sum(queue_consumer_in_flight{{{c}}})", None),
        ("Dead-lettered (time range)", "Messages moved to a dead-letter list: inspect them.",
         f'sum(increase(queue_consumer_messages_total{{{c}, outcome="dead_lettered"}}[{RANGE}]))',
         RED_FROM_1),
    ):  # fmt: skip
        lay.add(stat(title, description, [target(expr)], thresholds=thresholds), w=6, h=4)
    lay.add(
        timeseries(
            "Acked per second by queue",
            "Throughput of each queue.",
            targets(
                (
                    "sum by (queue) (rate(queue_consumer_messages_total"
                    f'{{{c}, outcome="acked"}}[{RATE}]))',
                    "{{queue}}",
                )
            ),
            unit="ops",
        )
    )
    lay.add(
        timeseries(
            "Outcomes",
            "acked: processed; retried: a failed delivery, tried again; dead_lettered: "
            "rejected (4xx, too big) or out of deliveries; pushed_back: returned unfinished "
            "to the queue by a drain.",
            targets(
                (
                    f"sum by (outcome) (rate(queue_consumer_messages_total{{{c}}}[{RATE}]))",
                    "{{outcome}}",
                )
            ),
            unit="ops",
            stack=True,
        )
    )
    lay.row("Latency")
    lay.add(
        timeseries(
            "Processing time",
            "From a message's first POST to its final answer (retries included): quantiles "
            "from the histogram, and the mean.",
            targets(
                *(
                    (
                        f"histogram_quantile({q}, sum by (le) "
                        f"(rate(queue_consumer_processing_seconds_bucket{{{c}}}[{RATE}])))",
                        f"p{round(q * 100)}",
                    )
                    for q in (0.5, 0.9, 0.99)
                ),
                (
                    f"sum(rate(queue_consumer_processing_seconds_sum{{{c}}}[{RATE}])) / "
                    f"sum(rate(queue_consumer_processing_seconds_count{{{c}}}[{RATE}]))",
                    "mean",
                ),
            ),
            unit="s",
        )
    )
    lay.add(
        heatmap(
            "Processing time distribution",
            "Messages per histogram bucket and interval.",
            f"sum by (le) (increase(queue_consumer_processing_seconds_bucket{{{c}}}[{RATE}]))",
        )
    )
    lay.row("State")
    state = " or ".join(
        f"max by (namespace, pod, queue) ({n} * (queue_consumer_state"
        f'{{{c}, queue_consumer_state="{s}"}} == 1))'
        for n, s in ((1, "running"), (2, "draining"), (3, "drained"))
    )
    lay.add(
        state_timeline(
            "State by pod",
            "running → draining (asked to drain, or SIGTERM) → drained (holds nothing).",
            targets((state, "{{pod}} {{queue}}")),
            [
                value_text(1, "running", "green"),
                value_text(2, "draining", "orange"),
                value_text(3, "drained", "blue"),
            ],
        )
    )
    lay.add(
        timeseries(
            "Consumers by state",
            "How many sidecars are in each state.",
            targets(
                (
                    f"sum by (queue_consumer_state) (queue_consumer_state{{{c}}})",
                    "{{queue_consumer_state}}",
                )
            ),
            stack=True,
        )
    )
    lay.add(
        timeseries(
            "In flight by pod",
            "Messages each sidecar holds now (bounded by --concurrency).",
            targets((f"sum by (pod, queue) (queue_consumer_in_flight{{{c}}})", "{{pod}}")),
        )
    )
    lay.add(
        timeseries(
            "Redis errors",
            "Failed Redis operations per second (each is retried with backoff).",
            targets(
                (
                    f"sum by (pod) (rate(queue_consumer_redis_errors_total{{{c}}}[{RATE}]))",
                    "{{pod}}",
                )
            ),
            unit="ops",
        )
    )
    return dashboard(
        "queue-autoscaler-sidecar",
        "queue-autoscaler / Sidecar consumers",
        "The sidecar consumers: throughput, latency, outcomes and drain state.",
        lay,
        [
            query_variable(
                "namespace",
                "Namespace",
                "label_values(queue_consumer_messages_total, namespace)",
                multi=True,
                include_all=True,
            ),
            query_variable(
                "queue",
                "Queue",
                'label_values(queue_consumer_messages_total{namespace=~"$namespace"}, queue)',
                multi=True,
                include_all=True,
            ),
        ],
    )


DASHBOARDS = {"overview": overview, "workload": workload, "sidecar": sidecar}
