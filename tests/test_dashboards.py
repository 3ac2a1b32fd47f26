"""grafana/: the committed files are what the generators write, the dashboards are well
formed for Grafana 11, and every panel query, variable and annotation runs against the
real Prometheus that scraped a live controller and its sidecars (``tests.livesystem``)
and returns data; every metric they name is one the processes export.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from grafana import build
from grafana.build import DASHBOARDS
from tests import livesystem
from tests.livesystem import VARIABLES, Observation, referenced_metrics, substitute
from tests.servers import PrometheusServer

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "grafana"
Json = dict[str, Any]


@pytest.fixture(scope="session")
def observed(prometheus_server: PrometheusServer) -> Observation:
    return livesystem.observe(prometheus_server)


def committed() -> dict[str, Json]:
    return {
        name: json.loads((GRAFANA / "dashboards" / f"{name}.json").read_text())
        for name in DASHBOARDS
    }


def panels(dashboard: Json) -> Iterator[Json]:
    """Every panel with queries (rows hold none)."""
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            yield panel


def queries(dashboard: Json) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target, variable and annotation."""
    for panel in panels(dashboard):
        for t in panel["targets"]:
            yield f"panel {panel['title']!r} {t['refId']}", t["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            yield f"variable {variable['name']}", variable["definition"]
    for mark in dashboard["annotations"]["list"]:
        if "expr" in mark:
            yield f"annotation {mark['name']!r}", mark["expr"]


# ---- the files ----------------------------------------------------------------------------


def test_generated_files_are_current() -> None:
    stale = [str(p.relative_to(ROOT)) for p in build.stale()]
    assert not stale, f"run `python -m grafana.build` to regenerate: {stale}"


def test_check_mode_names_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert build.main(["--root", str(tmp_path)]) == 0  # a checkout with every file current
    assert build.main(["--check", "--root", str(tmp_path)]) == 0
    capsys.readouterr()
    (tmp_path / "grafana" / "dashboards" / "overview.json").write_text("{}\n")
    assert build.main(["--check", "--root", str(tmp_path)]) == 1
    assert capsys.readouterr().err == "out of date: grafana/dashboards/overview.json\n"


@pytest.mark.parametrize("name", list(DASHBOARDS))
def test_dashboard_is_well_formed_for_grafana_11(name: str) -> None:
    dashboard = committed()[name]
    assert dashboard["schemaVersion"] >= 39
    assert dashboard["uid"] == f"queue-autoscaler-{name}" and len(dashboard["uid"]) <= 40
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] > 0 and pos["x"] + pos["w"] <= 24, panel["title"]
    for panel in panels(dashboard):
        assert panel["title"] and panel["description"], panel
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


def test_workload_dashboard_drills_down_by_namespace_and_workload() -> None:
    dashboard = committed()["workload"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["namespace"]["definition"].startswith("label_values(")
    assert '{namespace="$namespace"}' in variables["workload"]["definition"]
    for panel in panels(dashboard):
        for t in panel["targets"]:  # every query is about the chosen workload
            assert "$workload" in t["expr"] and "$namespace" in t["expr"], panel["title"]
    kinds = {p["type"] for p in panels(dashboard)}
    assert {"state-timeline", "bargauge", "timeseries", "stat"} <= kinds
    names = {a["name"] for a in dashboard["annotations"]["list"]}
    assert {"Scale events", "Drain outcomes"} <= names


def test_provisioning_files_point_at_the_dashboards() -> None:
    sources = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yaml").read_text())
    [source] = sources["datasources"]
    assert (source["type"], source["uid"], source["access"]) == (
        "prometheus",
        "prometheus",
        "proxy",
    )
    providers = yaml.safe_load(
        (GRAFANA / "provisioning/dashboards/queue-autoscaler.yaml").read_text()
    )
    [provider] = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == build.DASHBOARDS_PATH


def test_metrics_reference_documents_every_label() -> None:
    text = (ROOT / "docs" / "metrics.md").read_text()
    assert "(undocumented)" not in text
    assert "queue_autoscaler_drains_total" in text and "queue_consumer_state" in text


def test_metric_names_are_parsed_out_of_promql() -> None:
    expr = (
        'sum by (q) (rate(queue_consumer_messages_total{outcome="acked"}[1m])) / '
        "queue_autoscaler_decisionz_total"
    )
    assert referenced_metrics(expr) == {
        "queue_consumer_messages_total",
        "queue_autoscaler_decisionz_total",  # a renamed metric is caught by name
    }
    assert substitute('x{a=~"$namespace"}[$__rate_interval]', {"namespace": "shop"}) == (
        'x{a=~"shop"}[1m]'
    )
    with pytest.raises(KeyError):
        substitute('x{a="$nope"}', {})


# ---- against Prometheus -------------------------------------------------------------------


@pytest.mark.parametrize("name", list(DASHBOARDS))
def test_every_metric_a_dashboard_uses_is_exported(name: str, observed: Observation) -> None:
    used = set().union(*(referenced_metrics(e) for _, e in queries(committed()[name])))
    assert used, name
    missing = used - observed.exported
    assert not missing, f"{name} uses series no process exports: {sorted(missing)}"


@pytest.mark.parametrize("name", list(DASHBOARDS))
def test_every_panel_query_runs_and_every_panel_has_data(name: str, observed: Observation) -> None:
    dashboard = committed()[name]
    errors, empty = [], []
    for panel in panels(dashboard):
        results = 0
        for t in panel["targets"]:
            try:
                results += len(observed.query(substitute(t["expr"], VARIABLES)))
            except livesystem.QueryError as e:
                errors.append(f"{panel['title']} {t['refId']}: {e}")
        if not results:
            empty.append(panel["title"])
    assert not errors, "\n".join(errors)
    assert not empty, f"{name}: panels without data: {empty}"


@pytest.mark.parametrize("name", list(DASHBOARDS))
def test_template_variables_offer_the_live_workload(name: str, observed: Observation) -> None:
    """``label_values(selector, label)`` done as Grafana does it: /api/v1/series."""
    for variable in committed()[name]["templating"]["list"]:
        if variable["type"] != "query":
            continue
        inner = variable["definition"].removeprefix("label_values(").removesuffix(")")
        selector, label = (part.strip() for part in inner.rsplit(",", 1))
        values = {s.get(label) for s in observed.series(substitute(selector, VARIABLES))}
        assert VARIABLES[variable["name"]] in values, (variable["name"], values)


@pytest.mark.parametrize("name", list(DASHBOARDS))
def test_annotations_mark_what_happened(name: str, observed: Observation) -> None:
    for mark in committed()[name]["annotations"]["list"]:
        if "expr" in mark:  # the scenario scaled and drained within the last minute
            # An annotation looks at its whole time range; the last minutes stand for it.
            hits = [observed.query(substitute(mark["expr"], VARIABLES), at=observed.at - back)
                    for back in range(0, 60, 5)]  # fmt: skip
            assert any(hits), mark["name"]


def test_readme_metrics_table_is_the_generated_one() -> None:
    rows = [
        line
        for line in (ROOT / "docs" / "metrics.md").read_text().splitlines()
        if line.startswith("|")
    ]
    readme = (ROOT / "README.md").read_text()
    assert "\n".join(rows) in readme, "copy docs/metrics.md's table into the README"
