"""Reading a workload's ``redis-auth-secret``: one ``get``, never a list or a watch.

Access is opt-in per namespace: the base RBAC grants no Secret access, and a user binds
the ClusterRole ``queue-autoscaler-secrets`` (``get`` on secrets) with a RoleBinding in
the namespaces whose workloads name a Secret (docs/deploy.md). So a 403 is an expected,
user-fixable state, not a bug: it and a 404 become a ``SourceError`` that says what to
create, which fails only the readings of the workloads using that Secret, and becomes
their ``TriggerFailed`` Warning Event (``controller.report``). Values are decoded here and
handed on; they are never logged, and neither is the response body.
"""

from __future__ import annotations

import base64
import binascii

from autoscaler.errors import KubeError, SourceError

from .client import KubeClient

SECRETS_CLUSTER_ROLE = "queue-autoscaler-secrets"
SECRET_PROBLEM = "redis-auth-secret "  # how every message about a Secret starts


async def read_secret(kube: KubeClient, namespace: str, name: str) -> dict[str, bytes]:
    """The Secret's decoded ``data``; ``SourceError`` naming the Secret and the fix."""
    where = f"{SECRET_PROBLEM}{namespace}/{name}"
    try:
        body = await kube.call(kube.core.read_namespaced_secret, name, namespace)
    except KubeError as e:
        if e.status == 403:
            raise SourceError(
                f"{where}: forbidden: the controller may not get Secrets in namespace "
                f"{namespace}; create a RoleBinding there to the ClusterRole "
                f"{SECRETS_CLUSTER_ROLE} for the controller's ServiceAccount (docs/deploy.md)"
            ) from None
        if e.status == 404:
            raise SourceError(
                f"{where}: not found: create Secret {name} in namespace {namespace} with the "
                "keys the server needs (username, password, ca.crt, tls.crt, tls.key)"
            ) from None
        raise SourceError(f"{where}: cannot read it: {e}") from None
    data: dict[str, bytes] = {}
    for key, value in (body.get("data") or {}).items():
        try:
            data[str(key)] = base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            raise SourceError(f"{where}: key {key} is not base64") from None
    return data
