"""Small builders for Grafana 11 dashboard JSON (plain dicts, no SDK).

Terms: a *target* is one PromQL query of a panel; a *panel* is a dict in the
dashboard's ``panels`` list; ``Layout`` places panels left to right, wrapping at the
24-column grid width. Every query uses the ``${datasource}`` template variable, so a
dashboard works both provisioned (our datasource uid ``prometheus``) and imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]

SCHEMA_VERSION = 39  # Grafana 11.0; later 11.x releases migrate it on load
DATASOURCE: Json = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH = 24
# Grafana fills these: a rate window fit for the scrape interval, and the whole time range.
RATE = "$__rate_interval"
RANGE = "$__range"
Thresholds = list[tuple[float | None, str]]  # (from value, colour); None: the base
RED_FROM_1: Thresholds = [(None, "green"), (1.0, "red")]


def target(expr: str, legend: str = "", *, ref: str = "A", instant: bool = False) -> Json:
    """One PromQL query; ``legend`` is Grafana's legend format (``{{label}}``)."""
    return {
        "refId": ref,
        "datasource": DATASOURCE,
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
        "format": "time_series",
    }


def targets(*queries: tuple[str, str]) -> list[Json]:
    """``(expr, legend)`` pairs as targets A, B, C…"""
    return [target(e, legend, ref=chr(ord("A") + i)) for i, (e, legend) in enumerate(queries)]


@dataclass
class Layout:
    """Places panels on the grid: left to right, a new line when the width is used up."""

    x: int = 0
    y: int = 0
    line_height: int = 0
    next_id: int = 1
    panels: list[Json] = field(default_factory=list)

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "type": "row",
                "id": self._id(),
                "title": title,
                "collapsed": False,
                "panels": [],
                "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": self.y},
            }
        )
        self.y += 1

    def add(self, panel: Json, w: int = 12, h: int = 8) -> None:
        if self.x + w > GRID_WIDTH:
            self._newline()
        panel["id"] = self._id()
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        self.x += w
        self.line_height = max(self.line_height, h)
        self.panels.append(panel)

    def _newline(self) -> None:
        if self.x:
            self.y += self.line_height
        self.x, self.line_height = 0, 0

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def _panel(kind: str, title: str, description: str, queries: list[Json]) -> Json:
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": queries,
    }


def timeseries(
    title: str,
    description: str,
    queries: list[Json],
    *,
    unit: str = "short",
    stack: bool = False,
    bars: bool = False,
    overrides: list[Json] | None = None,
    min_zero: bool = True,
) -> Json:
    custom: Json = {
        "drawStyle": "bars" if bars else "line",
        "lineWidth": 1,
        "fillOpacity": 60 if bars else 10,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stack else "none", "group": "A"},
    }
    defaults: Json = {"unit": unit, "custom": custom}
    if min_zero:
        defaults["min"] = 0
    panel = _panel("timeseries", title, description, queries)
    panel["fieldConfig"] = {"defaults": defaults, "overrides": overrides or []}
    panel["options"] = {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel


def dashed(legend_regex: str) -> Json:
    """An override drawing the series whose name matches ``legend_regex`` dashed."""
    return {
        "matcher": {"id": "byRegexp", "options": legend_regex},
        "properties": [
            {"id": "custom.lineStyle", "value": {"fill": "dash", "dash": [10, 10]}},
            {"id": "custom.fillOpacity", "value": 0},
        ],
    }


def right_axis(legend_regex: str, unit: str = "short") -> Json:
    """An override putting the matching series on a right-hand axis of its own."""
    return {
        "matcher": {"id": "byRegexp", "options": legend_regex},
        "properties": [
            {"id": "custom.axisPlacement", "value": "right"},
            {"id": "unit", "value": unit},
            {"id": "custom.fillOpacity", "value": 0},
            {"id": "custom.lineWidth", "value": 2},
        ],
    }


def stat(
    title: str,
    description: str,
    queries: list[Json],
    *,
    unit: str = "short",
    thresholds: Sequence[tuple[float | None, str]] | None = None,
    mappings: list[Json] | None = None,
) -> Json:
    steps = [{"value": v, "color": c} for v, c in (thresholds or [(None, "green")])]
    panel = _panel("stat", title, description, queries)
    panel["fieldConfig"] = {
        "defaults": {
            "unit": unit,
            "thresholds": {"mode": "absolute", "steps": steps},
            "mappings": mappings or [],
        },
        "overrides": [],
    }
    panel["options"] = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "background" if thresholds else "value",
        "graphMode": "none",
        "textMode": "auto",
        "justifyMode": "auto",
        "orientation": "auto",
    }
    return panel


def value_text(value: int, text: str, color: str) -> Json:
    """A value mapping: show ``text`` in ``color`` for ``value``."""
    return {
        "type": "value",
        "options": {str(value): {"text": text, "color": color, "index": value}},
    }


def state_timeline(title: str, description: str, queries: list[Json], mappings: list[Json]) -> Json:
    panel = _panel("state-timeline", title, description, queries)
    panel["fieldConfig"] = {
        "defaults": {
            "mappings": mappings,
            "color": {"mode": "thresholds"},
            "thresholds": {"mode": "absolute", "steps": [{"value": None, "color": "text"}]},
            "custom": {"fillOpacity": 80, "lineWidth": 0},
        },
        "overrides": [],
    }
    panel["options"] = {
        "mergeValues": True,
        "showValue": "never",
        "alignValue": "left",
        "rowHeight": 0.8,
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "single", "sort": "none"},
    }
    return panel


def bargauge(title: str, description: str, queries: list[Json], *, unit: str = "short") -> Json:
    panel = _panel("bargauge", title, description, queries)
    panel["fieldConfig"] = {
        "defaults": {
            "unit": unit,
            "min": 0,
            "color": {"mode": "palette-classic"},
            "thresholds": {"mode": "absolute", "steps": [{"value": None, "color": "green"}]},
        },
        "overrides": [],
    }
    panel["options"] = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "orientation": "horizontal",
        "displayMode": "basic",
        "showUnfilled": True,
        "valueMode": "color",
        "namePlacement": "left",
    }
    return panel


def heatmap(title: str, description: str, expr: str) -> Json:
    """A heatmap of a histogram's buckets (``sum by (le) (increase(…_bucket[…]))``)."""
    query = target(expr, "{{le}}")
    query["format"] = "heatmap"
    panel = _panel("heatmap", title, description, [query])
    panel["options"] = {
        "calculate": False,
        "yAxis": {"unit": "s", "axisPlacement": "left"},
        "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64},
        "cellGap": 1,
        "tooltip": {"mode": "single", "yHistogram": True},
        "legend": {"show": True},
        "rowsFrame": {"layout": "auto"},
    }
    panel["fieldConfig"] = {"defaults": {}, "overrides": []}
    return panel


def table(title: str, description: str, queries: list[Json], renames: dict[str, str]) -> Json:
    """Instant queries joined into one row per series labels (the ``merge`` transform)."""
    for q in queries:
        q.update({"instant": True, "range": False, "format": "table"})
    panel = _panel("table", title, description, queries)
    panel["fieldConfig"] = {"defaults": {"custom": {"align": "auto"}}, "overrides": []}
    panel["options"] = {"showHeader": True, "cellHeight": "sm"}
    panel["transformations"] = [
        {"id": "merge", "options": {}},
        {
            "id": "organize",
            "options": {"excludeByName": {"Time": True}, "renameByName": renames},
        },
    ]
    return panel


def datasource_variable() -> Json:
    return {
        "name": "datasource",
        "label": "Data source",
        "type": "datasource",
        "query": "prometheus",
        "current": {},
        "hide": 0,
        "refresh": 1,
        "regex": "",
        "options": [],
    }


def query_variable(
    name: str, label: str, query: str, *, multi: bool = False, include_all: bool = False
) -> Json:
    """A variable filled from ``label_values(…)``, refreshed when the time range changes."""
    variable: Json = {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DATASOURCE,
        "definition": query,
        "query": {"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor"},
        "refresh": 2,
        "sort": 1,
        "multi": multi,
        "includeAll": include_all,
        "current": {},
        "hide": 0,
        "options": [],
        "regex": "",
    }
    if include_all:
        variable["allValue"] = ".*"
    return variable


def annotation(name: str, expr: str, title: str, color: str, tags: str) -> Json:
    """Prometheus annotations: one mark per step where ``expr`` has a value."""
    return {
        "name": name,
        "datasource": DATASOURCE,
        "enable": True,
        "hide": False,
        "iconColor": color,
        "expr": expr,
        "step": "15s",
        "titleFormat": title,
        "tagKeys": tags,
        "textFormat": "",
        "useValueForTime": False,
    }


def builtin_annotations() -> Json:
    return {
        "builtIn": 1,
        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
        "enable": True,
        "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)",
        "name": "Annotations & Alerts",
        "type": "dashboard",
    }


def dashboard(
    uid: str,
    title: str,
    description: str,
    layout: Layout,
    variables: list[Json],
    annotations: list[Json] | None = None,
) -> Json:
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["queue-autoscaler"],
        "editable": True,
        "graphTooltip": 1,  # shared crosshair
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "refresh": "30s",
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "links": [
            {
                "type": "dashboards",
                "tags": ["queue-autoscaler"],
                "asDropdown": True,
                "title": "queue-autoscaler",
                "includeVars": True,
                "keepTime": True,
            }
        ],
        "annotations": {"list": [builtin_annotations(), *(annotations or [])]},
        "templating": {"list": [datasource_variable(), *variables]},
        "panels": layout.panels,
    }
