"""deploy/: the rendered manifests are valid and current, RBAC is least-privilege, the
controller and the example worker are set up as docs/deploy.md says, and the image is built
the way the Dockerfile promises.

``controller_rbac()`` and ``rbac_denied()`` are meant for the controller's end-to-end
tests too: ``assert not rbac_denied(fake_kube.requests)`` proves that every request the
controller made against the fake API server is permitted by the shipped roles.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.audit import granted  # (group, resource, verb) a Role grants

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
BUILDS = {  # what `kubectl kustomize` renders, by name
    "base": DEPLOY,
    "namespaced": DEPLOY / "overlays" / "namespaced",
    "monitoring": DEPLOY / "overlays" / "monitoring",
    "examples": DEPLOY / "examples",
}
CONTROLLER_NS = "queue-autoscaler"
# Schema versions: the oldest Kubernetes we support and the newest kubernetes-validate knows.
MIN_KUBERNETES = "1.30"
CRDS = {  # no schema in kubernetes-validate
    ("monitoring.coreos.com/v1", "PodMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
}
# Deprecated or removed API versions (kubernetes-validate only warns on these).
DEPRECATED = {
    "extensions/v1beta1",
    "apps/v1beta1",
    "apps/v1beta2",
    "policy/v1beta1",
    "autoscaling/v2beta1",
    "autoscaling/v2beta2",
    "batch/v1beta1",
    "rbac.authorization.k8s.io/v1alpha1",
    "rbac.authorization.k8s.io/v1beta1",
    "events.k8s.io/v1beta1",
    "coordination.k8s.io/v1beta1",
    "networking.k8s.io/v1beta1",
    "scheduling.k8s.io/v1beta1",
    "storage.k8s.io/v1beta1",
    "discovery.k8s.io/v1beta1",
    "node.k8s.io/v1beta1",
    "certificates.k8s.io/v1beta1",
    "apiextensions.k8s.io/v1beta1",
    "admissionregistration.k8s.io/v1beta1",
    "flowcontrol.apiserver.k8s.io/v1beta3",
}
# The controller's API usage (the brief of the controller issue), as (group, resource, verb).
CONTROLLER_PERMISSIONS = {
    *{("apps", r, v) for r in ("deployments", "statefulsets") for v in ("list", "watch", "patch")},
    *{
        ("apps", r, v)
        for r in ("deployments/scale", "statefulsets/scale")
        for v in ("get", "patch")
    },
    ("", "pods", "list"),
    ("", "pods", "patch"),
    ("autoscaling", "horizontalpodautoscalers", "list"),
    ("autoscaling", "horizontalpodautoscalers", "watch"),
    ("", "events", "get"),  # re-read after a 409 on a repeated Event
    ("", "events", "create"),
    ("", "events", "patch"),
}
# patch: the elector renews and releases with a merge patch carrying the resourceVersion.
LEASE_PERMISSIONS = {("coordination.k8s.io", "leases", v) for v in ("get", "create", "patch")}


@cache
def render(build: str) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: `kubectl kustomize` renders deploy/ (CI has it)")
    out = subprocess.run(
        [kubectl, "kustomize", str(BUILDS[build])],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return tuple(doc for doc in yaml.safe_load_all(out) if doc)


def find(build: str, kind: str, name: str | None = None) -> dict[str, Any]:
    [obj] = [
        o for o in render(build) if o["kind"] == kind and name in (None, o["metadata"]["name"])
    ]
    return obj


def controller_rbac(build: str = "base") -> tuple[dict[str, Any], dict[str, Any]]:
    """(the workload role: ClusterRole or namespaced Role, the leader-election Role)."""
    leases = find(build, "Role", "queue-autoscaler-leader-election")
    kind = "Role" if build == "namespaced" else "ClusterRole"
    return find(build, kind, "queue-autoscaler"), leases


def rbac_denied(
    requests: Iterable[Any], build: str = "base", controller_namespace: str = CONTROLLER_NS
) -> list[Any]:
    """The recorded requests (``tests.fakekube.rbac.RecordedRequest``) no shipped role permits.

    Lease requests count as permitted only in ``controller_namespace`` (the Role is there;
    pass the POD_NAMESPACE the controller ran with).
    """
    from tests.fakekube.rbac import rbac_allows

    workloads, leases = controller_rbac(build)

    def permitted(r: Any) -> bool:
        in_home = r.namespace == controller_namespace
        return bool(rbac_allows(workloads, r) or (in_home and rbac_allows(leases, r)))

    return [r for r in requests if r.is_resource and not permitted(r)]


# ---- every manifest: valid, strict, current ---------------------------------------------

_VALIDATED: set[tuple[str, str]] = set()


@pytest.mark.parametrize("build", list(BUILDS))
def test_rendered_manifests_pass_kubernetes_validate_strict(build: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    versions = (MIN_KUBERNETES, kubernetes_validate.utils.latest_version())
    for obj in render(build):
        if (obj["apiVersion"], obj["kind"]) in CRDS:
            continue  # a CRD kind: checked structurally below
        for version in versions:
            key = (version, json.dumps(obj, sort_keys=True))
            if key not in _VALIDATED:  # overlays repeat the base: validate each object once
                kubernetes_validate.validate(obj, version, strict=True)
                _VALIDATED.add(key)


def test_strict_validation_catches_a_misspelt_field() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    deployment = yaml.safe_load(yaml.safe_dump(find("base", "Deployment")))
    deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonroot"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, MIN_KUBERNETES, strict=True)


@pytest.mark.parametrize("build", list(BUILDS))
def test_api_versions_are_current(build: str) -> None:
    for obj in render(build):
        version = obj["apiVersion"]
        assert version not in DEPRECATED, f"{obj['kind']} uses deprecated {version}"
        assert not re.search(r"/v\d+(alpha|beta)\d+$", version), f"{obj['kind']}: {version}"


def test_pod_monitors_are_well_formed() -> None:
    monitors = [o for o in render("monitoring") if o["kind"] == "PodMonitor"]
    assert {m["metadata"]["name"] for m in monitors} == {
        "queue-autoscaler",
        "queue-autoscaler-consumers",
    }
    controller = find("base", "Deployment")
    pod_labels = controller["spec"]["template"]["metadata"]["labels"]
    worker = find("examples", "Deployment", "worker")["spec"]["template"]
    for monitor in monitors:
        spec = monitor["spec"]
        assert set(spec) <= {"selector", "podMetricsEndpoints", "namespaceSelector"}
        [endpoint] = spec["podMetricsEndpoints"]
        assert endpoint["path"] == "/metrics" and re.fullmatch(r"\d+s", endpoint["interval"])
        target = (
            controller["spec"]["template"]
            if monitor["metadata"]["name"] == ("queue-autoscaler")
            else worker
        )
        labels = target["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items()
        ports = {p["name"] for c in target["spec"]["containers"] for p in c.get("ports", [])}
        assert endpoint["port"] in ports
    assert pod_labels  # the controller's PodMonitor selects something


# ---- RBAC --------------------------------------------------------------------------------


@pytest.mark.parametrize("build", ["base", "namespaced"])
def test_roles_grant_exactly_the_controller_api_usage(build: str) -> None:
    workloads, leases = controller_rbac(build)
    assert granted(workloads) == CONTROLLER_PERMISSIONS
    assert granted(leases) == LEASE_PERMISSIONS
    assert leases["metadata"]["namespace"] == CONTROLLER_NS
    for role in (workloads, leases):
        for rule in role["rules"]:
            values = [*rule.get("apiGroups", []), *rule.get("resources", []), *rule["verbs"]]
            assert "*" not in values and not any("*" in v for v in values)
            assert not {"secrets", "pods/exec", "pods/attach", "pods/portforward"} & set(
                rule.get("resources", [])
            )
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
            assert "nonResourceURLs" not in rule and "resourceNames" not in rule


@pytest.mark.parametrize("build", ["base", "namespaced"])
def test_bindings_give_the_roles_to_the_controller_service_account(build: str) -> None:
    account = find(build, "ServiceAccount")["metadata"]
    deployment = find(build, "Deployment", "queue-autoscaler")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account["name"]
    bound = {
        b["roleRef"]["kind"] + "/" + b["roleRef"]["name"]
        for b in render(build)
        if b["kind"] in ("RoleBinding", "ClusterRoleBinding")
        for s in b["subjects"]
        if (s["kind"], s["name"], s["namespace"])
        == ("ServiceAccount", account["name"], account["namespace"])
    }
    workloads, _ = controller_rbac(build)
    assert bound == {
        f"{workloads['kind']}/queue-autoscaler",
        "Role/queue-autoscaler-leader-election",
    }


def test_namespaced_overlay_has_nothing_cluster_scoped() -> None:
    kinds = {o["kind"] for o in render("namespaced")}
    assert not kinds & {"Namespace", "ClusterRole", "ClusterRoleBinding"}
    assert all(o["metadata"].get("namespace") == CONTROLLER_NS for o in render("namespaced"))
    args = find("namespaced", "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=$(POD_NAMESPACE)" in args


def test_documented_controller_requests_are_permitted_and_secrets_are_not() -> None:
    rbac = pytest.importorskip("tests.fakekube.rbac")
    ns = "apps"

    def req(method: str, path: str, **query: str) -> Any:
        return rbac.request_info(method, path, query)

    allowed = [
        req("GET", "/apis/apps/v1/deployments", labelSelector="queue-autoscaler.io/enabled=true"),
        req("GET", "/apis/apps/v1/statefulsets", watch="true"),
        req("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/w/scale"),
        req("PATCH", f"/apis/apps/v1/namespaces/{ns}/statefulsets/s/scale"),
        req("GET", f"/apis/apps/v1/namespaces/{ns}/statefulsets/s/scale"),
        req("PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/w"),
        req("GET", "/api/v1/pods"),
        req("PATCH", f"/api/v1/namespaces/{ns}/pods/p"),
        req("GET", "/apis/autoscaling/v2/horizontalpodautoscalers"),
        req("POST", f"/api/v1/namespaces/{ns}/events"),
        req("GET", f"/api/v1/namespaces/{ns}/events/e"),
        req("PATCH", f"/apis/coordination.k8s.io/v1/namespaces/{CONTROLLER_NS}/leases/l"),
    ]
    assert rbac_denied(allowed) == []
    forbidden = [
        req("GET", f"/api/v1/namespaces/{ns}/secrets/s"),
        req("POST", f"/api/v1/namespaces/{ns}/pods/p/exec"),
        req("DELETE", f"/api/v1/namespaces/{ns}/pods/p"),
        req("PUT", f"/apis/apps/v1/namespaces/{ns}/deployments/w"),
        req("PUT", f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/l"),
        req("PUT", f"/apis/apps/v1/namespaces/{ns}/statefulsets/s/scale"),
        req("GET", "/apis/apps/v1/replicasets", watch="1"),
        req("GET", f"/api/v1/namespaces/{ns}/pods/p"),
        req("POST", f"/apis/events.k8s.io/v1/namespaces/{ns}/events"),
    ]
    assert rbac_denied(forbidden) == forbidden


# ---- the controller Deployment -----------------------------------------------------------


def test_controller_deployment_is_hardened_and_probed() -> None:
    deployment = find("base", "Deployment", "queue-autoscaler")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert deployment["spec"]["replicas"] == 2 and "--leader-elect" in container["args"]
    assert container["args"][0] == "run" and "--metrics-port=8080" in container["args"]
    assert 15 <= pod["terminationGracePeriodSeconds"] <= 60
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsNonRoot"] is True
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"} and "privileged" not in sc
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert "memory" in container["resources"]["limits"]
    [port] = container["ports"]
    assert (port["name"], port["containerPort"]) == ("metrics", 8080)
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert all("value" not in e for e in container["env"])  # no literal secrets
    service = find("base", "Service")
    assert (
        service["spec"]["selector"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


# ---- the example worker ------------------------------------------------------------------


def flags(args: list[str]) -> dict[str, str]:
    return dict(a.removeprefix("--").split("=", 1) for a in args if a.startswith("--"))


def test_example_worker_drains_before_its_processor_stops() -> None:
    from autoscaler.annotations import ANNOTATION_PREFIX, ENABLED_LABEL, parse_duration

    worker = find("examples", "Deployment", "worker")
    assert worker["metadata"]["labels"][ENABLED_LABEL] == "true"
    assert "replicas" not in worker["spec"]  # the controller owns the count
    pod = worker["spec"]["template"]["spec"]
    # Plain containers, processor first: see docs/deploy.md for why not a native sidecar.
    assert "initContainers" not in pod
    processor, consumer = pod["containers"]
    assert consumer["args"][0] == "consume" and "lifecycle" not in consumer
    consumer_flags = flags(consumer["args"])
    assert {
        "redis-url",
        "queue",
        "forward",
        "drain-timeout",
        "metrics-port",
        "max-deliveries",
        "dead-letter",
    } <= consumer_flags.keys()
    assert consumer_flags["forward"].startswith("http://127.0.0.1:8080/")
    metrics_port = int(consumer_flags["metrics-port"])
    assert {
        "name": "consumer-metrics",
        "containerPort": metrics_port,
        "protocol": "TCP",
    } in consumer["ports"]
    # The processor's preStop waits for the consumer's exit; its postStart for itself.
    pre_stop = processor["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[2:4] == ["closed", f"127.0.0.1:{metrics_port}"]
    post_start = processor["lifecycle"]["postStart"]["exec"]["command"]
    assert post_start[2:4] == ["open", "127.0.0.1:8080"]
    # Timeouts nest: consumer drain < controller's drain wait < grace period.
    consumer_drain_s = parse_duration(consumer_flags["drain-timeout"])
    annotation_s = parse_duration(
        worker["metadata"]["annotations"][ANNOTATION_PREFIX + "drain-timeout"]
    )
    grace_s = pod["terminationGracePeriodSeconds"]
    assert consumer_drain_s < annotation_s < grace_s and grace_s >= consumer_drain_s + 30
    assert float(pre_stop[pre_stop.index("--timeout") + 1]) < grace_s
    assert pod["securityContext"]["runAsNonRoot"] is True
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert "memory" in container["resources"]["limits"]


def test_example_redis_runs_as_non_root() -> None:
    pod = find("examples", "Deployment", "redis")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    [container] = pod["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_rendered_example_passes_autoscaler_check() -> None:
    """The real command, reading the rendered manifests on stdin (``autoscaler check -``)."""
    done = subprocess.run(
        [sys.executable, "-m", "autoscaler", "check", "-"],
        input=yaml.safe_dump_all(render("examples")),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert "Deployment queue-autoscaler-example/worker: ok" in done.stdout


def _listen() -> socket.socket:
    server = socket.create_server(("127.0.0.1", 0))
    server.listen()
    return server


def test_pre_stop_hook_returns_only_once_the_consumer_port_closes() -> None:
    script = str(DEPLOY / "examples" / "wait_port.py")
    consumer = _listen()  # stands in for the draining consumer's metrics port
    port = consumer.getsockname()[1]
    hook = subprocess.Popen(
        [sys.executable, script, "closed", f"127.0.0.1:{port}", "--timeout", "10"]
    )
    try:
        # The hook probes every 0.5 s: a second probe means it found the port open and kept
        # waiting (the processor must keep serving while the consumer drains).
        consumer.settimeout(30)  # a deadline for each probe, not a pause
        for _ in range(2):
            probe, _address = consumer.accept()
            probe.close()
        assert hook.poll() is None
        consumer.close()  # drained, exited
        assert hook.wait(timeout=5) == 0
    finally:
        hook.kill()
        consumer.close()
    timed_out = subprocess.run(
        [sys.executable, script, "open", f"127.0.0.1:{port}", "--timeout", "0.2"],
        capture_output=True,
        text=True,
    )
    assert timed_out.returncode == 1 and "not open" in timed_out.stderr


# ---- the image ---------------------------------------------------------------------------


def dockerfile_stages() -> list[tuple[str, str, list[tuple[str, str]]]]:
    """[(base image, stage name, [(INSTRUCTION, arguments)])] with continuations joined."""
    text = (DEPLOY / "Dockerfile").read_text()
    logical = re.sub(
        r"\\\n\s*",
        " ",
        "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")),
    )
    stages: list[tuple[str, str, list[tuple[str, str]]]] = []
    for line in filter(None, (line.strip() for line in logical.splitlines())):
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", arguments.strip(), re.IGNORECASE)
            assert match, line
            stages.append((match[1], match[2] or "", []))
        else:
            stages[-1][2].append((instruction.upper(), arguments.strip()))
    return stages


def test_dockerfile_is_multi_stage_slim_non_root_with_autoscaler_entrypoint() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    (builder_image, builder, build_steps), (image, _, steps) = stages[0], stages[-1]
    assert builder and image.startswith("python:3.11-slim")
    assert builder_image.startswith("python:3.11")
    run_text = " ".join(args for op, args in build_steps if op == "RUN")
    assert "--require-hashes" in run_text and "requirements.lock" in " ".join(
        args for _, args in build_steps
    )
    assert any(op == "COPY" and args.startswith(f"--from={builder} ") for op, args in steps)
    users = [args for op, args in steps if op == "USER"]
    assert users and users[-1].split(":")[0] == "65532"
    entrypoints = [args for op, args in steps if op == "ENTRYPOINT"]
    assert entrypoints and yaml.safe_load(entrypoints[-1]) == ["autoscaler"]  # exec form
    final_runs = " ".join(args for op, args in steps if op == "RUN")
    for tool in ("apt-get", "gcc", "build-essential", "pip install", "curl", "wget"):
        assert tool not in final_runs, f"final stage runs {tool}"


def test_dockerignore_keeps_the_context_to_what_the_image_needs() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"  # an allow-list
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert {"pyproject.toml", "README.md", "autoscaler", "deploy/requirements.lock"} <= included
    assert not included & {".git", ".venv", "tests", ".env"}
    copied = {
        args.split()[-2]
        for _, _, steps in dockerfile_stages()
        for op, args in steps
        if op == "COPY" and not args.startswith("--from")
    }
    assert {c.rstrip("/") for c in copied} <= included | {"deploy/requirements.lock"}


def test_lock_pins_every_runtime_dependency_with_hashes() -> None:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    text = (DEPLOY / "requirements.lock").read_text()
    pins: dict[str, str] = {}
    for block in re.split(r"\n(?=\S)", re.sub(r"(?m)^#.*\n", "", text).strip()):
        head = block.split()[0]
        name, _, version = head.partition("==")
        assert version and "--hash=sha256:" in block, f"not pinned with hashes: {head}"
        pins[canonicalize_name(name.split("[")[0])] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dependency in map(Requirement, project["dependencies"]):
        name = canonicalize_name(dependency.name)
        assert name in pins, f"{name} missing from deploy/requirements.lock"
        assert dependency.specifier.contains(pins[name]), f"{name}=={pins[name]} vs {dependency}"
        for extra in dependency.extras:  # redis[hiredis]
            assert canonicalize_name(extra) in pins
    # The demo's and --plot's extras are not the controller's: the image does not carry them.
    for extra in ("demo", "plot"):
        for dependency in map(Requirement, project["optional-dependencies"][extra]):
            assert canonicalize_name(dependency.name) not in pins, f"{dependency.name} ([{extra}])"


def test_lock_pins_nothing_the_runtime_dependencies_do_not_need() -> None:
    """The image carries the runtime closure only (the kubernetes client, pydantic and
    requests left with kube.config: docs/performance.md, goal 5). The closure is read from
    the installed packages' metadata; markers are judged for Python 3.11.0 on Linux, as the
    lock is compiled (async-timeout is needed before 3.11.3)."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    text = (DEPLOY / "requirements.lock").read_text()
    pinned = {canonicalize_name(m) for m in re.findall(r"(?m)^([A-Za-z0-9_.\-]+)==", text)}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    todo = [Requirement(d) for d in project["dependencies"]]
    needed: set[str] = set()
    env = {"python_version": "3.11", "python_full_version": "3.11.0", "sys_platform": "linux",
           "platform_system": "Linux", "implementation_name": "cpython"}  # fmt: skip
    while todo:
        requirement = todo.pop()
        extras = ["", *sorted(requirement.extras)]
        name = canonicalize_name(requirement.name)
        needed |= {name} | {canonicalize_name(e) for e in requirement.extras}
        try:  # not installed: needed only by another Python (async-timeout), and a leaf
            children = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            children = []
        for line in children:
            child = Requirement(line)
            marker = child.marker
            applies = marker is None or any(marker.evaluate({**env, "extra": e}) for e in extras)
            if applies and canonicalize_name(child.name) not in needed:
                todo.append(child)
    assert pinned - needed == set()
