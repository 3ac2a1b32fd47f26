"""``autoscaler check``: effective specs, every error with its key, warnings, exit codes."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

import autoscaler.kube
from autoscaler.check import collect_errors, render_spec
from autoscaler.cli import main
from autoscaler.config import ENABLED_LABEL, KEYS, PREFIX, parse_spec
from autoscaler.errors import KubeTransientError

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


REDIS = {PREFIX + "redis-list": "jobs", PREFIX + "messages-per-replica": "10"}


# ---- the effective spec ----------------------------------------------------------------


@pytest.mark.parametrize(
    "annotations",
    [
        REDIS,
        {PREFIX + "prometheus-query": "sum(rate(x[1m]))", PREFIX + "prometheus-target": "2.5"},
        {
            **REDIS,
            PREFIX + "redis-url": "rediss://r.example:6380",
            PREFIX + "min-replicas": "2",
            PREFIX + "max-replicas": "7",
            PREFIX + "polling-interval": "1.5s",
            PREFIX + "scale-down-stabilization": "0",
            PREFIX + "cooldown": "1h30m",
            PREFIX + "fallback-replicas": "3",
            PREFIX + "target-drain-time": "500ms",
            PREFIX + "paused": "true",
            PREFIX + "drain": "false",
            PREFIX + "count-in-flight": "false",
            PREFIX + "prometheus-query": "q",
            PREFIX + "prometheus-target": "1e6",
            PREFIX + "prometheus-url": "http://p:9090",
            PREFIX + "tolerance": "0.25",
        },
    ],
)
def test_render_spec_lists_every_key_and_parses_back(annotations: dict[str, str]) -> None:
    spec = parse_spec(annotations)
    rendered = render_spec(spec)
    assert list(rendered) == [k.name for k in KEYS]
    again = parse_spec({PREFIX + k: v for k, v in rendered.items() if v is not None})
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
        if line.startswith("    " + PREFIX)
    }
    assert lines[PREFIX + "redis-list"] == "jobs"
    assert lines[PREFIX + "messages-per-replica"] == "20"
    assert lines[PREFIX + "drain-timeout"] == "1m"
    assert lines[PREFIX + "tolerance"] == "0.1"  # a default, shown too
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
    assert f"error: annotation {PREFIX}messages-per-replica: 'twenty': expected a number > 0" in out


# ---- errors: all of them, each with its key ----------------------------------------------


def test_every_error_is_reported_with_its_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = {
        PREFIX + "redis-list": "jobs",
        PREFIX + "min-replicas": "-1",
        PREFIX + "max-replica": "5",
        PREFIX + "cooldown": "soon",
    }
    code, report = run_json(capsys, write(tmp_path, workload(bad)))
    assert code == 1
    keys = [e["key"] for e in report["workloads"][0]["errors"]]
    assert sorted(keys) == sorted(
        PREFIX + k for k in ("max-replica", "messages-per-replica", "min-replicas", "cooldown")
    )
    typo = next(e for e in report["workloads"][0]["errors"] if e["key"].endswith("max-replica"))
    assert "did you mean max-replicas" in typo["expected"]
    assert report["workloads"][0]["spec"] is None and report["errors"] == 4


def test_a_missing_trigger_does_not_hide_other_errors() -> None:
    spec, errors = collect_errors({PREFIX + "max-replicas": "0"})
    assert spec is None
    assert [e.key for e in errors] == [PREFIX + "redis-list", PREFIX + "max-replicas"]


def test_credentials_in_a_url_are_never_echoed(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    leaky = {**REDIS, PREFIX + "redis-url": "redis://user:hunter2@r:6379"}
    assert main(["check", write(tmp_path, workload(leaky))]) == 1
    out = capsys.readouterr().out
    assert "hunter2" not in out and f"{PREFIX}redis-url" in out


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
    obj = workload(REDIS, kind="DaemonSet", template_annotations={PREFIX + "max-replicas": "3"})
    code, report = run_json(capsys, write(tmp_path, obj))
    warnings = report["workloads"][0]["warnings"]
    assert code == 0 and len(warnings) == 2
    assert "DaemonSet" in warnings[0] and f"{PREFIX}max-replicas" in warnings[1]


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


def test_stdin_multi_document_and_list(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    listed = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [workload(REDIS, name="a"), workload(REDIS, name="b")],
    }
    text = "---\n" + yaml.safe_dump(workload(REDIS, name="c")) + "---\n" + yaml.safe_dump(listed)
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    code, report = run_json(capsys, "-")
    second = text.splitlines().index("---", 1) + 2  # the line after the second ---
    assert code == 0
    assert [(w["name"], w["source"]) for w in report["workloads"]] == [
        ("c", "<stdin>:2"),
        ("a", f"<stdin>:{second}"),
        ("b", f"<stdin>:{second}"),
    ]


def test_files_or_cluster_exactly_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check"]) == 2
    assert main(["check", "--cluster", str(WORKER)]) == 2
    assert "--cluster" in capsys.readouterr().err


# ---- --cluster ---------------------------------------------------------------------------


def test_cluster_checks_the_listed_workloads(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[str | None, list[str]]] = []

    def fake_list(kubeconfig: str | None, namespaces: list[str]) -> list[dict[str, Any]]:
        calls.append((kubeconfig, namespaces))
        return [workload(REDIS, name="good"), workload({PREFIX + "redis-list": "jobs"}, name="bad")]

    monkeypatch.setattr(autoscaler.kube, "list_annotated_workloads", fake_list, raising=False)
    code, report = run_json(
        capsys, "--cluster", "--kubeconfig", "kc", "--namespace", "a", "--namespace", "b"
    )
    assert code == 1 and calls == [("kc", ["a", "b"])]
    assert [(w["name"], w["ok"], w["source"]) for w in report["workloads"]] == [
        ("good", True, "cluster"),
        ("bad", False, "cluster"),
    ]


def test_cluster_unreachable_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def failing(kubeconfig: str | None, namespaces: list[str]) -> list[dict[str, Any]]:
        raise KubeTransientError("connection refused")

    monkeypatch.setattr(autoscaler.kube, "list_annotated_workloads", failing, raising=False)
    assert main(["check", "--cluster"]) == 2
    assert "connection refused" in capsys.readouterr().err


try:  # the fake API server (tests/fakekube) runs the real client end to end
    from tests.fakekube.fixtures import fake_kube  # noqa: F401
    from tests.fakekube.server import FakeKubeServer
except ImportError:  # pragma: no cover - only while the fake is not in the tree
    FakeKubeServer = None  # type: ignore[assignment,misc]


@pytest.mark.skipif(FakeKubeServer is None, reason="tests/fakekube is not available")
async def test_cluster_against_the_fake_api_server(
    fake_kube: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from autoscaler.kube.listing import list_annotated_workloads

    worker = yaml.safe_load(WORKER.read_text())
    worker["metadata"]["namespace"] = "apps"
    fake_kube.create(worker)
    plain = yaml.safe_load(WORKER.read_text())
    plain["metadata"].update(name="plain", namespace="apps", labels={})
    fake_kube.create(plain)
    listed = await asyncio.to_thread(list_annotated_workloads, str(fake_kube.kubeconfig), [])
    assert [(o["kind"], o["metadata"]["name"]) for o in listed] == [("Deployment", "worker")]
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
    assert code == 0 and report["workloads"][0]["name"] == "worker"
    assert all(
        r.verb == "list" and r.query.get("labelSelector") == f"{ENABLED_LABEL}=true"
        for r in fake_kube.requests
        if r.is_resource
    )
