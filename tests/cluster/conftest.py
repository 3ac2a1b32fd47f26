"""Fixtures for the real-control-plane tests (marker ``cluster``).

- ``cluster`` (session): the control plane (``controlplane.start``), with what ``deploy/``
  renders for the controller installed — Namespace, ServiceAccount, the ClusterRole / Role and
  their bindings, the ValidatingAdmissionPolicy — and a token for that ServiceAccount from
  the TokenRequest API in ``cluster.controller_kubeconfig``. Skipped when the binaries were
  never built (``make test`` builds them first; so does ``scripts/control-plane.sh``).
- ``api``: the admin's REST client; ``namespace``: a fresh namespace per test (isolation),
  ready for pods (its ``default`` ServiceAccount exists).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.cluster import controlplane
from tests.cluster.api import Api, Obj, eventually
from tests.cluster.controlplane import CONTROLLER_SA, ControlPlane

ROOT = Path(__file__).resolve().parents[2]
# What the controller's install needs from the rendered deploy/ (not its Deployment, PDB,
# Service: the tests run the controller as a local process under that ServiceAccount).
INSTALLED_KINDS = (
    "Namespace",
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
)
TOKEN_TTL_S = 3 * 3600


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.cluster)
    # The audit comparison reads what every other cluster test made the controller do.
    last = [i for i in items if i.get_closest_marker("after_all_cluster_tests")]
    items[:] = [i for i in items if i not in last] + last


@dataclass
class Cluster:
    plane: ControlPlane
    token: str
    controller_kubeconfig: Path
    manifests: tuple[Obj, ...]  # what was installed from deploy/

    def role(self, kind: str, name: str) -> Obj:
        [obj] = [o for o in self.manifests if o["kind"] == kind and o["metadata"]["name"] == name]
        return obj


def render_deploy() -> tuple[Obj, ...]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: `kubectl kustomize` renders deploy/")
    out = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "deploy")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d and d["kind"] in INSTALLED_KINDS)


async def _install(plane: ControlPlane, manifests: tuple[Obj, ...]) -> str:
    api = Api(plane.url, plane.ssl_context())
    try:
        # The controller manager is up once it has made the default namespace's account.
        await eventually(
            lambda: api.maybe_get("/api/v1/namespaces/default/serviceaccounts/default"),
            60,
            "kube-controller-manager (the default ServiceAccount)",
            step_s=0.1,
        )
        for obj in manifests:
            await api.apply(obj)
        ns, name = CONTROLLER_SA
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": TOKEN_TTL_S},
        }
        body = await api.request(
            "POST", f"/api/v1/namespaces/{ns}/serviceaccounts/{name}/token", request
        )
        token: str = body["status"]["token"]
        return token
    finally:
        await api.aclose()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    binaries = controlplane.bin_dir()
    if binaries is None:
        pytest.skip(
            "no control plane built: run scripts/control-plane.sh (`make test` does), "
            f"or set {controlplane.BIN_ENV}"
        )
    manifests = render_deploy()
    plane = controlplane.start(binaries)
    try:
        token = asyncio.run(_install(plane, manifests))
        kubeconfig = plane.kubeconfig(
            tmp_path_factory.mktemp("controller") / "kubeconfig", {"token": token}
        )
        yield Cluster(plane, token, kubeconfig, manifests)
    finally:
        controlplane.remove(plane)


@pytest.fixture
async def api(cluster: Cluster) -> AsyncIterator[Api]:
    client = Api(cluster.plane.url, cluster.plane.ssl_context())
    yield client
    await client.aclose()


@pytest.fixture
async def controller_api(cluster: Cluster) -> AsyncIterator[Api]:
    """REST calls as the controller's ServiceAccount (its token)."""
    client = Api(cluster.plane.url, cluster.plane.ssl_context(admin=False), token=cluster.token)
    yield client
    await client.aclose()


@pytest.fixture
async def namespace(api: Api, request: pytest.FixtureRequest) -> str:
    short = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"{short}-{uuid.uuid4().hex[:5]}"
    await api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    await eventually(
        lambda: api.maybe_get(f"/api/v1/namespaces/{name}/serviceaccounts/default"),
        30,
        f"the default ServiceAccount of {name}",
    )
    return name
