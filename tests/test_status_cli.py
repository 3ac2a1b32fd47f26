"""``autoscaler status`` against the fake API server (fast): the states the real control
plane test cannot hold still (Draining, Pending), the JSON, an empty namespace, bad input."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from autoscaler.annotations import ANNOTATION_PREFIX, STATUS_ANNOTATION
from autoscaler.cli import main
from autoscaler.status import render, row_of
from tests.fakekube import FakeKubeServer
from tests.fakekube.fixtures import fake_kube as fake_kube
from tests.kubeutil import workload

SPEC = {ANNOTATION_PREFIX + "redis-list": "jobs", ANNOTATION_PREFIX + "messages-per-replica": "10"}


def annotated(name: str, status: dict[str, Any] | None = None, **extra: str) -> dict[str, Any]:
    annotations = {**SPEC, **{ANNOTATION_PREFIX + k.replace("_", "-"): v for k, v in extra.items()}}
    if status is not None:
        annotations[STATUS_ANNOTATION] = json.dumps(status)
    return workload("Deployment", name, namespace="apps", replicas=4, annotations=annotations)


async def status_json(fake: FakeKubeServer, capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    args = ["status", "--kubeconfig", str(fake.kubeconfig), *argv]
    assert await asyncio.to_thread(main, args) == 0
    return json.loads(capsys.readouterr().out)


async def test_draining_and_pending_states_and_the_json(
    fake_kube: FakeKubeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    draining = {"desired": 1, "current": 4, "reason": "ScaleDown", "active": False,
                "backlog": 0, "inFlight": 3, "conditions": []}  # fmt: skip
    fake_kube.create(annotated("shrinking", draining))
    fake_kube.create(annotated("new"))
    fake_kube.create(annotated("undrained", draining, drain="false"))
    doc = await status_json(fake_kube, capsys, "-n", "apps", "-o", "json")
    by_name = {w["name"]: w for w in doc["workloads"]}
    assert by_name["shrinking"]["state"] == "Draining"
    assert by_name["shrinking"]["in_flight"] == 3
    assert by_name["undrained"]["state"] == "Idle"  # no drain: a plain scale-down
    assert (by_name["new"]["state"], by_name["new"]["desired"]) == ("Pending", None)


async def test_an_empty_namespace_says_so(
    fake_kube: FakeKubeServer, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["status", "--kubeconfig", str(fake_kube.kubeconfig), "-n", "nobody"]
    assert await asyncio.to_thread(main, args) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip().splitlines()[-1] == (
        "No annotated workloads found in namespace nobody."
    )


def test_a_missing_kubeconfig_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--kubeconfig", str(tmp_path / "none"), "-n", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"autoscaler status: kubeconfig {tmp_path / 'none'}: no such file"


def test_rows_render_like_kubectl() -> None:
    now = 1_000_000.0
    obj = annotated("w", {"desired": 2, "current": 2, "reason": "ScaleUp", "backlog": 25.0,
                          "inFlight": 0.0, "active": True})  # fmt: skip
    created = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    obj["metadata"]["creationTimestamp"] = created
    obj["status"] = {"replicas": 2}
    row = row_of(obj, now + 11400)
    assert (row.state, row.age_s) == ("Active", 11400.0)  # 3 h 10 min
    lines = render([row]).splitlines()
    assert lines[0].split() == [
        "NAMESPACE", "NAME", "MIN", "MAX", "CURRENT", "DESIRED", "BACKLOG", "IN-FLIGHT",
        "TRIGGERS", "STATE", "REASON", "AGE",
    ]  # fmt: skip
    assert lines[1].split() == ["apps", "w", "0", "100", "2", "2", "25", "0", "redis", "Active",
                                "ScaleUp", "3h"]  # fmt: skip
