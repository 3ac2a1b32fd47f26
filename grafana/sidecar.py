"""The sidecar consumers' dashboard: throughput, latency, outcomes and drain state."""

from __future__ import annotations

from grafana.panels import (
    RANGE,
    RATE,
    RED_FROM_1,
    Json,
    Layout,
    dashboard,
    heatmap,
    query_variable,
    stat,
    state_timeline,
    target,
    targets,
    timeseries,
    value_text,
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
