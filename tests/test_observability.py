"""Metrics, alert rules and structured logs, proved on a live controller and live sidecars
scraped by the real Prometheus (``tests.livesystem``), and on promtool's own unit tests.

- the alert rules pass ``promtool check rules`` and ``promtool test rules``;
- every alert expression evaluates through the HTTP API, and on the live system exactly
  the alerts whose condition the scenario staged match, on the right workload;
- label cardinality stays bounded under 1,000 messages with unique ids;
- the controller's log records name their fields as the metric labels do.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from autoscaler.annotations import ANNOTATION_PREFIX, parse_spec
from autoscaler.logs import FIELDS, JsonFormatter
from autoscaler.metrics import DIRECTIONS, DRAIN_STAGES, ControllerMetrics
from autoscaler.policy import Reason
from tests import livesystem
from tests.livecomponents import NAMESPACE
from tests.livesystem import Observation, referenced_metrics
from tests.servers import PrometheusServer

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "alerts.rules.yaml"

# What the scenario staged: alert → the label values it must fire for.
EXPECTED_ALERTS = {
    "QueueAutoscalerSourceErrors": {("workload", "blind")},
    "QueueAutoscalerFallbackActive": {("workload", "blind")},
    "QueueAutoscalerAtMaxReplicasBacklogGrowing": {("workload", "flood")},
    "QueueAutoscalerInvalidSpec": {("workload", "typo")},
    "QueueAutoscalerDrainTimeouts": {("workload", "slow")},
    "QueueAutoscalerUndrainedPodsRemoved": {("workload", "lossy")},
    "QueueAutoscalerDeadLetterGrowing": {("queue", "jobs")},
}
HEALTHY = {"QueueAutoscalerControllerDown", "QueueAutoscalerNoLeader",
           "QueueAutoscalerMultipleLeaders"}  # fmt: skip


@pytest.fixture(scope="session")
def observed(prometheus_server: PrometheusServer) -> Observation:
    return livesystem.observe(prometheus_server)


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool is not installed: run `make test`, which installs prometheus")
    return subprocess.run(
        [binary, *args], cwd=MONITORING, capture_output=True, text=True, timeout=60
    )


# ---- the rules, offline -------------------------------------------------------------------


def test_alert_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_pass_their_promtool_unit_tests() -> None:
    result = promtool("test", "rules", "alerts.test.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    tests = yaml.safe_load((MONITORING / "alerts.test.yaml").read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert fired == {rule["alert"] for rule in alert_rules()}


def test_every_alert_is_documented_and_graded() -> None:
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"critical", "warning"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_prometheus_rule_wraps_the_rules_file() -> None:
    wrapped = yaml.safe_load((MONITORING / "alerts.yaml").read_text())
    assert (wrapped["apiVersion"], wrapped["kind"]) == (
        "monitoring.coreos.com/v1",
        "PrometheusRule",
    )
    assert wrapped["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    component = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    assert "alerts.yaml" in component["resources"]


def test_controller_pod_monitor_keeps_the_workload_namespace_label() -> None:
    monitors = list(yaml.safe_load_all((MONITORING / "podmonitor.yaml").read_text()))
    [controller] = [m for m in monitors if m["metadata"]["name"] == "queue-autoscaler"]
    [endpoint] = controller["spec"]["podMetricsEndpoints"]
    assert endpoint["honorLabels"] is True  # else `namespace` becomes `exported_namespace`


# ---- the rules, live ----------------------------------------------------------------------


def test_alert_rules_use_only_exported_metrics(observed: Observation) -> None:
    for rule in alert_rules():
        used = referenced_metrics(rule["expr"])
        assert used, rule["alert"]
        assert used <= observed.exported, (rule["alert"], sorted(used - observed.exported))


def test_alert_expressions_match_exactly_what_the_scenario_staged(
    observed: Observation,
) -> None:
    matched: dict[str, set[tuple[str, str]]] = {}
    for rule in alert_rules():
        result = observed.query(rule["expr"])  # raises on a parse or evaluation error
        if result:
            matched[rule["alert"]] = {
                (k, v) for r in result for k, v in r["metric"].items() if k in {"workload", "queue"}
            }
    assert matched == EXPECTED_ALERTS
    assert not HEALTHY & set(matched)


# ---- the series ---------------------------------------------------------------------------


def test_track_creates_counters_at_zero_and_forget_removes_every_series() -> None:
    registry = CollectorRegistry()
    metrics = ControllerMetrics(registry)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"namespace": "ns", "workload": "w", **labels})

    def spec(lists: str) -> Any:
        return parse_spec(
            {ANNOTATION_PREFIX + "redis-list": lists,
             ANNOTATION_PREFIX + "messages-per-replica": "5",
             ANNOTATION_PREFIX + "max-replicas": "7"}
        )  # fmt: skip

    metrics.track("ns", "w", spec("a,b"))
    for stage in DRAIN_STAGES:
        assert value("queue_autoscaler_drains_total", stage=stage) == 0
    for direction in DIRECTIONS:
        assert value("queue_autoscaler_scale_events_total", direction=direction) == 0
    assert value("queue_autoscaler_undrained_pod_removals_total") == 0
    assert value("queue_autoscaler_source_errors_total", trigger="redis:a,b") == 0
    assert (value("queue_autoscaler_min_replicas"), value("queue_autoscaler_max_replicas")) == (
        0,
        7,
    )
    assert registry.get_sample_value("queue_autoscaler_reaped_messages_total", {"queue": "b"}) == 0
    metrics.backlog.labels("ns", "w", "redis:a,b").set(3)
    metrics.decisions.labels("ns", "w", "ScaleUp").inc()
    metrics.track("ns", "w", spec("c"))  # the old trigger's series go with it
    assert value("queue_autoscaler_backlog", trigger="redis:a,b") is None
    assert value("queue_autoscaler_source_errors_total", trigger="redis:c") == 0
    metrics.forget("ns", "w")
    left = [s for f in registry.collect() for s in f.samples if s.labels.get("workload") == "w"]
    assert not left


def test_controller_and_sidecar_series_tell_the_story(observed: Observation) -> None:
    def value(expr: str) -> float:
        [sample] = observed.query(expr)
        return float(sample["value"][1])

    ns = f'namespace="{NAMESPACE}"'
    assert value("sum(queue_autoscaler_leader)") == 1
    assert (
        value(f'sum(queue_autoscaler_drains_total{{{ns}, workload="jobs", stage="acknowledged"}})')
        >= 1
    )
    assert (
        value(f'sum(queue_autoscaler_drains_total{{{ns}, workload="slow", stage="timed_out"}})')
        == 1
    )
    assert value('sum(queue_autoscaler_reaped_messages_total{queue="slow"})') == 1
    assert value(f'max(queue_autoscaler_current_replicas{{{ns}, workload="jobs"}})') == 1
    assert value('sum(queue_consumer_messages_total{queue="jobs", outcome="acked"})') >= 1000
    assert value(
        f'sum(queue_consumer_state{{{ns}, pod="jobs-b", queue_consumer_state="drained"}})'
    ) == 1  # fmt: skip
    assert value('sum(queue_autoscaler_kube_requests_total{verb!=""})') > 0
    assert value("count(queue_autoscaler_build_info)") == 1


def test_label_cardinality_is_bounded_under_unique_message_ids(observed: Observation) -> None:
    # No label value anywhere is a message id (nor contains one).
    leaked = {v for v in observed.label_values for i in observed.message_ids if i in v}
    assert not leaked
    prom_values = {
        v
        for s in observed.series('{__name__=~"queue_(autoscaler|consumer)_.+"}')
        for v in s.values()
    }
    assert not {v for v in prom_values for i in observed.message_ids if i in v}
    # 1,000 messages later, the same series — except a workload may give new decision
    # reasons (at most one per reason) and the Kubernetes client new status codes.
    allowance = {
        "queue_autoscaler_decisions_total": observed.workloads * len(Reason),
        "queue_autoscaler_decisions_created": observed.workloads * len(Reason),
        "queue_autoscaler_kube_requests_total": 10,
        "queue_autoscaler_kube_requests_created": 10,
    }
    for counts_before, counts_after in (
        (observed.before, observed.after),
        (observed.prom_before, observed.prom_after),
    ):
        for name, after in counts_after.items():
            growth = after - counts_before.get(name, 0)
            assert growth <= allowance.get(name, 0), (name, counts_before.get(name), after)
    assert sum(observed.prom_after.values()) < len(observed.message_ids) / 2


# ---- the logs -----------------------------------------------------------------------------


def test_log_fields_are_the_metric_label_names(observed: Observation) -> None:
    records = [r for r in observed.records if getattr(r, FIELDS, None)]
    events = {r.getMessage() for r in records}
    assert {"decision", "scaled", "drain started", "drain acknowledged", "drain timed out",
            "undrained removal", "reaped", "invalid spec"} <= events  # fmt: skip
    allowed = {
        "reason": {str(r) for r in Reason},
        "stage": set(DRAIN_STAGES),
        "direction": set(DIRECTIONS),
    }
    formatter = JsonFormatter()
    for record in records:
        fields: dict[str, Any] = getattr(record, FIELDS)
        where = f"{record.name}: {record.getMessage()} {fields}"
        assert not {"ns", "name", "deployment", "list", "queue_name"} & set(fields), where
        if "workload" in fields:
            assert "namespace" in fields, where
        if record.name.startswith(("autoscaler.controller", "autoscaler.drain")):
            for key, values in allowed.items():
                assert fields.get(key, next(iter(values))) in values, where
        line = json.loads(formatter.format(record))
        assert {k: line[k] for k in fields} == json.loads(json.dumps(fields, default=str))
    scaled = [getattr(r, FIELDS) for r in records if r.getMessage() == "scaled"]
    assert all("direction" in f for f in scaled)


def test_sidecar_json_logs_carry_the_queue_label(observed: Observation) -> None:
    lines = [json.loads(line) for line in observed.sidecar_logs if line.startswith("{")]
    assert lines
    assert all(line["queue"] in {"jobs", "slow"} for line in lines if "consumer" in line)
    assert any(line.get("queue") == "jobs" for line in lines)


def test_log_levels_match_the_alerts(observed: Observation) -> None:
    """What an alert fires on is logged as a warning too (one place to look first)."""
    warnings = {r.getMessage() for r in observed.records if r.levelno >= logging.WARNING}
    assert {"drain timed out", "undrained removal", "invalid spec"} <= warnings
