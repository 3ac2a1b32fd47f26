"""The overview dashboard: every workload's load, replicas, decisions and errors."""

from __future__ import annotations

from grafana.panels import (
    RATE,
    RED_FROM_1,
    Json,
    Layout,
    dashboard,
    dashed,
    query_variable,
    right_axis,
    stat,
    table,
    target,
    targets,
    timeseries,
)


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
