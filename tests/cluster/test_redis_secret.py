"""``redis-auth-secret`` on the real control plane: RBAC opt-in, a missing binding or Secret
as a Warning Event, rotation, and only ``get`` ever asked of the Secrets API.

The controller (``autoscaler run`` as deploy/'s ServiceAccount) watches one namespace with
three workloads: ``plain`` on the controller's default Redis (no credentials), ``locked``
whose Redis wants the ACL user of Secret ``redis-creds``, and ``orphan`` naming a Secret
that does not exist. Before the RoleBinding to ClusterRole ``queue-autoscaler-secrets``,
``locked`` holds with an Event saying what to bind, while ``plain`` scales; after it,
``locked`` scales. The ACL password is then changed on the server and in the Secret: the
controller reads the Secret again and keeps scaling.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.cluster import audit
from tests.cluster.api import Api, eventually
from tests.cluster.conftest import Cluster
from tests.cluster.harness import CONTROLLER_NS, k8s_events, spec_replicas, start_controller, worker
from tests.redisprod import USER, Proc, acl_config, spawn

PASSWORD = "first-pw"


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[Proc, Proc]]:
    """(the default Redis, no auth; the locked Redis, ACL user only)."""
    plain = spawn(tmp_path / "redis", "")
    locked = spawn(tmp_path / "redis", acl_config(PASSWORD))
    yield plain, locked
    locked.stop()
    plain.stop()


def _secret(namespace: str, password: str) -> dict[str, object]:
    data = {k: base64.b64encode(v.encode()).decode() for k, v in
            {"username": USER, "password": password}.items()}  # fmt: skip
    return {"apiVersion": "v1", "kind": "Secret", "data": data,
            "metadata": {"name": "redis-creds", "namespace": namespace}}  # fmt: skip


def _binding(namespace: str) -> dict[str, object]:
    """The RoleBinding docs/deploy.md tells users to create."""
    return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "queue-autoscaler-secrets", "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "queue-autoscaler-secrets"},
            "subjects": [{"kind": "ServiceAccount", "name": "queue-autoscaler",
                          "namespace": CONTROLLER_NS}]}  # fmt: skip


FAST = {"messages_per_replica": "10", "polling_interval": "200ms", "drain": "false",
        "scale_up_max_pods": "50", "max_replicas": "50"}  # fmt: skip


async def _warnings(api: Api, namespace: str, name: str, text: str) -> list[str]:
    return [
        e["message"]
        for e in await k8s_events(api, namespace, name)
        if e["type"] == "Warning" and text in e["message"]
    ]


async def test_secret_access_is_opt_in_events_say_what_to_create_and_rotation_is_followed(
    cluster: Cluster, api: Api, namespace: str, servers: tuple[Proc, Proc], tmp_path: Path
) -> None:
    plain, locked = servers
    plain_url = f"redis://127.0.0.1:{plain.port}/0"
    locked_url = f"redis://127.0.0.1:{locked.port}/0"
    plain_client = aioredis.Redis(port=plain.port)
    locked_client = aioredis.Redis(port=locked.port, username=USER, password=PASSWORD)
    await plain_client.lpush("plain", *[b"p"] * 30)
    await locked_client.lpush("locked", *[b"l"] * 40)
    await api.create(_secret(namespace, PASSWORD))
    args = ["consume", "--queue=unused", "--forward=http://127.0.0.1:9/"]
    await api.create(worker(namespace, "plain", args, redis_list="plain", **FAST))
    await api.create(worker(namespace, "locked", args, redis_list="locked", redis_url=locked_url,
                            redis_auth_secret="redis-creds", **FAST))  # fmt: skip
    await api.create(worker(namespace, "orphan", args, redis_list="locked", redis_url=locked_url,
                            redis_auth_secret="nosuch", **FAST))  # fmt: skip
    controller = await start_controller(cluster, tmp_path, plain_url, namespace)
    try:
        # No RoleBinding yet: the default install may not read Secrets.
        await eventually(lambda: _is(api, namespace, "plain", 3), 30, "plain scaled to 3")
        [forbidden, *_] = await eventually(
            lambda: _warnings(api, namespace, "locked", "redis-creds"), 30, "the 403 Event"
        )
        assert "forbidden" in forbidden and "RoleBinding" in forbidden
        assert "queue-autoscaler-secrets" in forbidden and PASSWORD not in forbidden
        assert await spec_replicas(api, namespace, "locked") == 1  # held, not guessed

        await api.create(_binding(namespace))  # the opt-in
        await eventually(lambda: _is(api, namespace, "locked", 4), 60, "locked scaled to 4")
        [missing, *_] = await eventually(
            lambda: _warnings(api, namespace, "orphan", "nosuch: not found"), 60, "the 404 Event"
        )
        assert f"create Secret nosuch in namespace {namespace}" in missing
        assert await spec_replicas(api, namespace, "orphan") == 1

        # Rotation: the server takes a new password, then the Secret carries it.
        await locked_client.execute_command("ACL", "SETUSER", USER, "resetpass", ">second-pw")
        await locked_client.execute_command("CLIENT", "KILL", "USER", USER)
        await api.apply(_secret(namespace, "second-pw"))
        admin = aioredis.Redis(port=locked.port, username=USER, password="second-pw")
        await admin.lpush("locked", *[b"l"] * 30)
        await admin.aclose()
        await eventually(lambda: _is(api, namespace, "locked", 7), 90, "locked scaled to 7")
    finally:
        code = await controller.stop()
        await plain_client.aclose()
        await locked_client.aclose()
    assert code == 0, controller.tail()
    assert "second-pw" not in controller.log.read_text()
    assert PASSWORD not in controller.log.read_text()
    secret_requests = [
        r for r in audit.read(cluster.plane.audit_log)
        if r.resource == "secrets" and r.namespace == namespace
        and not r.user_agent.startswith("python-httpx")
    ]  # fmt: skip
    assert secret_requests and {r.verb for r in secret_requests} == {"get"}
    assert {r.name for r in secret_requests} == {"redis-creds", "nosuch"}
    print(
        f"\nsecret reads: {len(secret_requests)} gets "
        f"({sum(r.decision == 'forbid' for r in secret_requests)} forbidden before the binding)"
    )


async def _is(api: Api, namespace: str, name: str, replicas: int) -> bool:
    return await spec_replicas(api, namespace, name) == replicas
