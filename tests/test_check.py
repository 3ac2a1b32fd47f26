"""``autoscaler check``: effective specs, every error with its key, warnings, exit codes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from autoscaler.annotations import ANNOTATION_PREFIX, ENABLED_LABEL, KEYS, parse_spec
from autoscaler.annotations import effective_values as render_spec
from autoscaler.check import collect_errors
from autoscaler.cli import main
from tests.servers import RedisServer

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "deploy" / "examples" / "worker.yaml"


def workload(
    annotations: dict[str, str],
    *,
    labelled: bool = True,
    kind: str = "Deployment",
    name: str = "w",
    template_annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "namespace": "apps", "annotations": annotations}
    if labelled:
        metadata["labels"] = {ENABLED_LABEL: "true"}
    template = {"metadata": {"annotations": template_annotations or {}}}
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "metadata": metadata,
        "spec": {"template": template},
    }


def write(tmp_path: Path, *objects: Any, name: str = "m.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    return str(path)


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = main(["check", "--output", "json", *argv])
    return code, json.loads(capsys.readouterr().out)


REDIS = {ANNOTATION_PREFIX + "redis-list": "jobs", ANNOTATION_PREFIX + "messages-per-replica": "10"}


# ---- the effective spec ----------------------------------------------------------------


@pytest.mark.parametrize(
    "annotations",
    [
        REDIS,
        {
            ANNOTATION_PREFIX + "prometheus-query": "sum(rate(x[1m]))",
            ANNOTATION_PREFIX + "prometheus-target": "2.5",
        },
        {
            **REDIS,
            ANNOTATION_PREFIX + "redis-url": "rediss://r.example:6380",
            ANNOTATION_PREFIX + "min-replicas": "2",
            ANNOTATION_PREFIX + "max-replicas": "7",
            ANNOTATION_PREFIX + "polling-interval": "1.5s",
            ANNOTATION_PREFIX + "scale-down-stabilization": "0",
            ANNOTATION_PREFIX + "cooldown": "1h30m",
            ANNOTATION_PREFIX + "fallback-replicas": "3",
            ANNOTATION_PREFIX + "target-drain-time": "500ms",
            ANNOTATION_PREFIX + "paused": "true",
            ANNOTATION_PREFIX + "drain": "false",
            ANNOTATION_PREFIX + "count-in-flight": "false",
            ANNOTATION_PREFIX + "prometheus-query": "q",
            ANNOTATION_PREFIX + "prometheus-target": "1e6",
            ANNOTATION_PREFIX + "prometheus-url": "http://p:9090",
            ANNOTATION_PREFIX + "tolerance": "0.25",
        },
    ],
)
def test_render_spec_lists_every_key_and_parses_back(annotations: dict[str, str]) -> None:
    spec = parse_spec(annotations)
    rendered = render_spec(spec)
    assert list(rendered) == [k.name for k in KEYS]
    again = parse_spec({ANNOTATION_PREFIX + k: v for k, v in rendered.items() if v is not None})
    assert again == spec


def test_example_worker_passes_and_prints_its_effective_spec(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check", str(WORKER)]) == 0
    out = capsys.readouterr().out
    assert f"{WORKER}:" in out and "Deployment worker: ok" in out
    lines = {
        line.split()[0]: line.split()[1]
        for line in out.splitlines()
        if line.startswith("    " + ANNOTATION_PREFIX)
    }
    assert lines[ANNOTATION_PREFIX + "redis-list"] == "jobs"
    assert lines[ANNOTATION_PREFIX + "messages-per-replica"] == "20"
    assert lines[ANNOTATION_PREFIX + "drain-timeout"] == "1m"
    assert lines[ANNOTATION_PREFIX + "tolerance"] == "0.1"  # a default, shown too
    assert len(lines) == len(KEYS)
    assert "0 error(s), 0 warning(s)" in out


def test_a_broken_copy_of_the_example_fails_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "worker.yaml"
    broken.write_text(
        WORKER.read_text().replace('messages-per-replica: "20"', 'messages-per-replica: "twenty"')
    )
    assert main(["check", str(broken)]) == 1
    out = capsys.readouterr().out
    assert (
        f"error: annotation {ANNOTATION_PREFIX}messages-per-replica: 'twenty': "
        "expected a number > 0" in out
    )


# ---- errors: all of them, each with its key ----------------------------------------------


def test_every_error_is_reported_with_its_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = {
        ANNOTATION_PREFIX + "redis-list": "jobs",
        ANNOTATION_PREFIX + "min-replicas": "-1",
        ANNOTATION_PREFIX + "max-replica": "5",
        ANNOTATION_PREFIX + "cooldown": "soon",
    }
    code, report = run_json(capsys, write(tmp_path, workload(bad)))
    assert code == 1
    keys = [e["key"] for e in report["workloads"][0]["errors"]]
    assert sorted(keys) == sorted(
        ANNOTATION_PREFIX + k
        for k in ("max-replica", "messages-per-replica", "min-replicas", "cooldown")
    )
    typo = next(e for e in report["workloads"][0]["errors"] if e["key"].endswith("max-replica"))
    assert "did you mean max-replicas" in typo["expected"]
    assert report["workloads"][0]["spec"] is None and report["errors"] == 4


def test_a_missing_trigger_does_not_hide_other_errors() -> None:
    spec, errors = collect_errors({ANNOTATION_PREFIX + "max-replicas": "0"})
    assert spec is None
    assert [e.key for e in errors] == [
        ANNOTATION_PREFIX + "redis-list",
        ANNOTATION_PREFIX + "max-replicas",
    ]


def test_credentials_in_a_url_are_never_echoed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    leaky = {**REDIS, ANNOTATION_PREFIX + "redis-url": "redis://user:hunter2@r:6379"}
    assert main(["check", write(tmp_path, workload(leaky))]) == 1
    out = capsys.readouterr().out
    assert "hunter2" not in out and f"{ANNOTATION_PREFIX}redis-url" in out


# ---- warnings ----------------------------------------------------------------------------


def test_annotations_without_the_label_warn_but_pass(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write(
        tmp_path,
        workload(REDIS, labelled=False),
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "unrelated"}},
    )
    code, report = run_json(capsys, path)
    assert code == 0
    [only] = report["workloads"]  # the ConfigMap has nothing of ours: not reported
    assert only["name"] == "w" and only["spec"] is None
    assert ENABLED_LABEL in only["warnings"][0] and "ignores" in only["warnings"][0]


def test_label_not_exactly_true_is_a_warning(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    obj = workload(REDIS)
    obj["metadata"]["labels"][ENABLED_LABEL] = "True"
    code, report = run_json(capsys, write(tmp_path, obj))
    assert code == 0 and "'True'" in report["workloads"][0]["warnings"][0]


def test_pod_template_annotations_and_unscaled_kinds_warn(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    obj = workload(
        REDIS, kind="DaemonSet", template_annotations={ANNOTATION_PREFIX + "max-replicas": "3"}
    )
    code, report = run_json(capsys, write(tmp_path, obj))
    warnings = report["workloads"][0]["warnings"]
    assert code == 0 and len(warnings) == 2
    assert "DaemonSet" in warnings[0] and f"{ANNOTATION_PREFIX}max-replicas" in warnings[1]


# ---- inputs ------------------------------------------------------------------------------


def test_bad_yaml_exits_2_naming_file_and_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n")
    assert main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:5" in err and "bad YAML" in err


@pytest.mark.parametrize("content", [None, "- just\n- a list\n", "\xff\xfe"])
def test_unreadable_inputs_exit_2(
    content: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "in.yaml"
    if content is not None:
        path.write_bytes(content.encode("latin-1"))
    assert main(["check", str(path)]) == 2
    assert str(path) in capsys.readouterr().err


def test_stdin_multi_document_and_list() -> None:
    listed = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [workload(REDIS, name="a"), workload(REDIS, name="b")],
    }
    text = "---\n" + yaml.safe_dump(workload(REDIS, name="c")) + "---\n" + yaml.safe_dump(listed)
    done = subprocess.run(
        [sys.executable, "-m", "autoscaler", "check", "--output", "json", "-"],
        input=text, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    code, report = done.returncode, json.loads(done.stdout)
    # Each object is named by its own line: a document's first, a List item's "- ".
    items = [n for n, line in enumerate(text.splitlines(), 1) if line.startswith("- ")]
    assert code == 0
    assert [(w["name"], w["source"]) for w in report["workloads"]] == [
        ("c", "<stdin>:2"),
        ("a", f"<stdin>:{items[0]}"),
        ("b", f"<stdin>:{items[1]}"),
    ]


def test_files_or_cluster_exactly_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check"]) == 2
    assert main(["check", "--cluster", str(WORKER)]) == 2
    assert "--cluster" in capsys.readouterr().err


# ---- --cluster ---------------------------------------------------------------------------


def test_cluster_unreachable_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such-kubeconfig"
    assert main(["check", "--cluster", "--kubeconfig", str(missing)]) == 2
    assert "cannot list the cluster's workloads" in capsys.readouterr().err


try:  # the fake API server (tests/fakekube) runs the real client end to end
    from tests.fakekube.fixtures import fake_kube  # noqa: F401
    from tests.fakekube.server import FakeKubeServer
except ImportError:  # pragma: no cover - only while the fake is not in the tree
    FakeKubeServer = None  # type: ignore[assignment,misc]


@pytest.mark.skipif(FakeKubeServer is None, reason="tests/fakekube is not available")
async def test_cluster_against_the_fake_api_server(
    fake_kube: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    worker = yaml.safe_load(WORKER.read_text())
    worker["metadata"]["namespace"] = "apps"
    fake_kube.create(worker)
    bad = yaml.safe_load(WORKER.read_text())
    bad["metadata"].update(name="bad", namespace="apps")
    bad["metadata"]["annotations"] = {
        ANNOTATION_PREFIX + "redis-list": "jobs"
    }  # no messages-per-replica
    fake_kube.create(bad)
    elsewhere = yaml.safe_load(WORKER.read_text())
    elsewhere["metadata"]["namespace"] = "other"
    fake_kube.create(elsewhere)
    plain = yaml.safe_load(WORKER.read_text())
    plain["metadata"].update(name="plain", namespace="apps", labels={})
    fake_kube.create(plain)
    code = await asyncio.to_thread(
        main,
        [
            "check",
            "--cluster",
            "--kubeconfig",
            str(fake_kube.kubeconfig),
            "--namespace",
            "apps",
            "--output",
            "json",
        ],
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 1  # "bad" has an error; "plain" is not labelled, "other" not asked for
    assert [(w["name"], w["ok"], w["source"]) for w in report["workloads"]] == [
        ("bad", False, "cluster"),
        ("worker", True, "cluster"),
    ]
    assert all(
        r.verb == "list" and r.query.get("labelSelector") == f"{ENABLED_LABEL}=true"
        for r in fake_kube.requests
        if r.is_resource
    )


@pytest.mark.skipif(FakeKubeServer is None, reason="tests/fakekube is not available")
async def test_cluster_warns_about_a_redis_that_can_lose_messages(
    fake_kube: Any, own_redis: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """The test server runs with neither AOF nor RDB: a warning on the workload that uses
    it (not an error: exit 0); a Redis that cannot be read is a warning naming it."""
    worker = yaml.safe_load(WORKER.read_text())
    worker["metadata"]["namespace"] = "apps"
    del worker["metadata"]["annotations"][ANNOTATION_PREFIX + "redis-url"]  # --redis-url's
    fake_kube.create(worker)
    away = yaml.safe_load(WORKER.read_text())
    away["metadata"].update(name="away", namespace="apps")
    away["metadata"]["annotations"][ANNOTATION_PREFIX + "redis-url"] = "redis://127.0.0.1:1/0"
    fake_kube.create(away)
    argv = ["check", "--cluster", "--kubeconfig", str(fake_kube.kubeconfig),
            "--namespace", "apps", "--redis-url", own_redis.url, "--output", "json"]  # fmt: skip
    code = await asyncio.to_thread(main, argv)
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    warnings = {w["name"]: w["warnings"] for w in report["workloads"]}
    [persistence] = warnings["worker"]
    assert persistence.startswith(f"redis redis://127.0.0.1:{own_redis.port}/0: neither AOF")
    [unread] = warnings["away"]
    assert unread.startswith("redis redis://127.0.0.1:1/0: cannot read its persistence"), unread


# ---- what passed silently before (issue 15) ----------------------------------------------

DEPLOYMENT = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: w
  labels:
    queue-autoscaler.io/enabled: "true"
  annotations:
    queue-autoscaler.io/redis-list: jobs
    queue-autoscaler.io/messages-per-replica: "10"
"""


def test_a_near_miss_of_the_prefix_is_an_error_at_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(DEPLOYMENT + '    queue-autoscaller.io/max-replicas: "5"\n')
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:10: error: annotation queue-autoscaller.io/max-replicas: '5': expected " in out
    assert "did you mean queue-autoscaler.io/max-replicas?" in out


def test_a_typo_in_the_label_alone_is_still_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(DEPLOYMENT.replace("queue-autoscaler.io/", "queue-autoscaller.io/"))
    code, report = run_json(capsys, str(path))
    assert code == 1
    wheres = [(e["key"], e["where"]) for e in report["workloads"][0]["errors"]]
    assert wheres[0] == ("queue-autoscaller.io/enabled", f"{path}:6")
    assert len(wheres) == 3


def test_errors_point_at_the_annotations_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(
        DEPLOYMENT.replace('"10"', '"ten"') + '    queue-autoscaler.io/polling-interval: "1ms"\n'
    )
    assert main(["check", str(path)]) == 1
    out = capsys.readouterr().out
    assert f"{path}:9: error: annotation {ANNOTATION_PREFIX}messages-per-replica: 'ten'" in out
    assert f"{path}:10: error: annotation {ANNOTATION_PREFIX}polling-interval: '1ms'" in out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (DEPLOYMENT + '    queue-autoscaler.io/messages-per-replica: "20"\n',
         ":10: duplicate key 'queue-autoscaler.io/messages-per-replica' (first on line 9)"),
        ("replicaCount: 3\nimage: {tag: v1}\n", ":1: not a Kubernetes object"),
        ("", ": empty: no Kubernetes object in it"),
        ("# only a comment\n---\n", ": empty: no Kubernetes object in it"),
    ],
)  # fmt: skip
def test_duplicate_keys_non_kubernetes_and_empty_files_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = tmp_path / "in.yaml"
    path.write_text(text)
    assert main(["check", str(path)]) == 2
    assert f"{path}{message}" in capsys.readouterr().err


def test_json_output_on_bad_yaml_is_still_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(DEPLOYMENT)
    bad.write_text("apiVersion: v1\nkind: X\nmetadata: {name: [x\n")
    code, report = run_json(capsys, str(good), str(bad))
    assert code == 2
    assert [w["name"] for w in report["workloads"]] == ["w"]
    assert len(report["input_errors"]) == 1
    assert report["input_errors"][0].startswith(f"{bad}:4:1: bad YAML")
