"""``autoscaler status`` and ``kubectl queue-autoscaler status`` on the real control plane:
one line per workload in each state the controller can put it in, the conditions in the
status annotation, and the Events an operator must see (a failing trigger's cause, once;
fallback entered)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import yaml

from tests.cluster.api import Api, Obj, eventually
from tests.cluster.conftest import Cluster
from tests.cluster.harness import (
    PREFIX,
    STATUS,
    consumer_args,
    k8s_events,
    start_controller,
    worker,
)

BIN = Path(sys.executable).parent
ALWAYS_OPEN = "start=* * * * *, end=59 23 31 12 *, replicas=2"  # opened this minute
COMMON: dict[str, str] = {
    "polling_interval": "1s", "drain": "false", "scale_down_stabilization": "0s",
}  # fmt: skip


async def run_cli(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def table(text: str) -> dict[str, dict[str, str]]:
    """NAME → {column: cell} of a status table (cells have no spaces but MESSAGE)."""
    lines = text.splitlines()
    header = lines[0].split()
    return {
        row[1]: dict(zip(header, row, strict=False))
        for row in (line.split(None, len(header) - 1) for line in lines[1:])
    }


async def _status_doc(api: Api, namespace: str, name: str) -> dict[str, Any] | None:
    obj = await api.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
    text = (obj["metadata"].get("annotations") or {}).get(STATUS)
    return json.loads(text) if text else None


async def test_status_shows_every_state_and_the_events_say_why(
    cluster: Cluster,
    api: Api,
    namespace: str,
    redis_url: str,
    redis_client: aioredis.Redis,
    tmp_path: Path,
) -> None:
    args = consumer_args(redis_url, "jobs", "http://127.0.0.1:9")

    def manifest(name: str, replicas: int = 1, **annotations: str) -> Obj:
        obj = worker(namespace, name, args, replicas=replicas)
        values = {**COMMON, **annotations}
        obj["metadata"]["annotations"] = {
            PREFIX + k.replace("_", "-"): v for k, v in values.items()
        }
        return obj

    manifests = [
        manifest("busy", redis_list="jobs", messages_per_replica="10", max_replicas="5"),
        manifest("idle", 0, redis_list="quiet", messages_per_replica="10"),
        manifest("nightly", 0, redis_list="later", messages_per_replica="10", schedule=ALWAYS_OPEN),
        manifest("held", redis_list="held", messages_per_replica="10", paused_replicas="1"),
        manifest(
            "blind", prometheus_url="http://127.0.0.1:1", prometheus_query="sum(up)",
            prometheus_target="1", fallback_replicas="2", failure_threshold="1",
        ),
        manifest("typo", redis_list="jobs", messages_per_replica="lots"),
    ]  # fmt: skip
    for obj in manifests:
        await api.create(obj)
    await redis_client.lpush("jobs", *[f"m{i}" for i in range(30)])
    controller = await start_controller(cluster, tmp_path, redis_url, namespace)
    try:
        for name in ("busy", "idle", "nightly", "held", "blind"):
            await eventually(_status_of(api, namespace, name), 60, f"{name} status")
        await eventually(lambda: _settled(api, namespace), 60, "busy 3, nightly 2, held 1")
        admin = str(cluster.plane.admin_kubeconfig)
        code, out, err = await run_cli(
            str(BIN / "autoscaler"), "status", f"--kubeconfig={admin}", "-n", namespace
        )
        assert code == 0, err
        print(f"\n$ autoscaler status -n {namespace}\n{out}")  # the screen, for the record
        rows = table(out)
        assert list(rows) == ["blind", "busy", "held", "idle", "nightly", "typo"]
        expected = {
            "busy": ("Active", "3", "30", "redis"),
            "idle": ("Idle", "0", "0", "redis"),
            "nightly": ("Active", "2", "0", "redis,schedule"),
            "held": ("Paused", "1", "0", "redis"),
            "blind": ("Fallback", "2", "-", "prometheus"),
        }
        for name, (state, desired, backlog, triggers) in expected.items():
            row = rows[name]
            assert (row["STATE"], row["DESIRED"], row["BACKLOG"], row["TRIGGERS"]) == (
                state, desired, backlog, triggers,
            ), row  # fmt: skip
            assert row["NAMESPACE"] == namespace and row["AGE"].endswith(("s", "m"))
        assert (rows["typo"]["STATE"], rows["typo"]["REASON"]) == ("Invalid", "InvalidSpec")
        assert (rows["busy"]["MIN"], rows["busy"]["MAX"]) == ("0", "5")

        await _wide_json_and_kubectl(cluster, namespace, tmp_path)
        events = await k8s_events(api, namespace, "blind")
        failed = [e for e in events if e["reason"] == "TriggerFailed"]
        assert len(failed) == 1 and failed[0]["type"] == "Warning"
        assert failed[0]["count"] == 1  # once per change, not once per cycle
        assert "127.0.0.1:1" in failed[0]["message"]
        entered = [e for e in events if e["reason"] == "FallbackEntered"]
        assert [(e["type"], e["count"]) for e in entered] == [("Warning", 1)]
        assert "fallback static 2" not in entered[0]["message"]  # the default behaviour
        assert "fallback current-if-higher 2 → 2" in entered[0]["message"]
        doc = await _status_doc(api, namespace, "blind")
        assert doc is not None
        by_type = {c["type"]: c for c in doc["conditions"]}
        assert by_type["Fallback"]["status"] == "True"
        assert (
            by_type["Ready"]["status"] == "False" and by_type["Ready"]["reason"] == "TriggerError"
        )
    finally:
        code = await controller.stop()
    assert code == 0, controller.tail()


def _status_of(api: Api, namespace: str, name: str) -> Callable[[], Awaitable[Any]]:
    return lambda: _status_doc(api, namespace, name)


async def _settled(api: Api, namespace: str) -> bool:
    wanted = {"busy": 3, "nightly": 2, "held": 1, "blind": 2, "idle": 0}
    for name, replicas in wanted.items():
        obj = await api.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
        if (obj.get("status") or {}).get("replicas", 0) != replicas:
            return False
        doc = await _status_doc(api, namespace, name)
        if doc is None or doc.get("desired") != replicas:
            return False
    return True


async def _wide_json_and_kubectl(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    admin = str(cluster.plane.admin_kubeconfig)
    code, out, _ = await run_cli(
        str(BIN / "autoscaler"), "status", f"--kubeconfig={admin}", "-n", namespace, "-o", "wide"
    )
    assert code == 0
    print(f"\n$ autoscaler status -n {namespace} -o wide\n{out}")
    wide = table(out)
    assert (wide["blind"]["READY"], wide["blind"]["FALLBACK"]) == ("False", "True")
    assert (wide["held"]["PAUSED"], wide["nightly"]["ACTIVE"]) == ("True", "True")
    assert "schedule floor 2" in wide["nightly"]["MESSAGE"]

    code, out, _ = await run_cli(
        str(BIN / "autoscaler"), "status", f"--kubeconfig={admin}", "-A", "-o", "json"
    )
    assert code == 0
    ours = [w for w in json.loads(out)["workloads"] if w["namespace"] == namespace]
    assert {w["name"]: w["state"] for w in ours}["typo"] == "Invalid"
    assert {c["type"] for c in next(w for w in ours if w["name"] == "busy")["conditions"]} == {
        "Ready", "Active", "Fallback", "Paused",
    }  # fmt: skip

    # kubectl runs the installed kubectl-queue_autoscaler; the context's namespace is the default
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    scoped = _scoped_kubeconfig(Path(admin), namespace, tmp_path / "scoped.kubeconfig")
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    code, out, err = await run_cli(
        kubectl, "queue-autoscaler", "status", f"--kubeconfig={scoped}", env={"PATH": path}
    )
    assert code == 0, err
    assert sorted(table(out)) == ["blind", "busy", "held", "idle", "nightly", "typo"]


def _scoped_kubeconfig(admin: Path, namespace: str, path: Path) -> Path:
    """The admin's kubeconfig with ``namespace`` as its context's namespace."""
    config = yaml.safe_load(admin.read_text())
    config["contexts"][0]["context"]["namespace"] = namespace
    path.write_text(yaml.safe_dump(config))
    return path
