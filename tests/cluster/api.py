"""The harness's own door to the real apiserver: plain REST over httpx, as the admin.

Deliberately not ``autoscaler.kube`` (the code under test) and not a generated client: the
tests want exact status codes and the JSON as the server sent it. ``path_of`` maps a
manifest to its URL; ``Api.apply`` creates or replaces whole manifests (what
``kubectl apply`` would do for the objects the tests own).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

Obj = dict[str, Any]
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"

# (apiVersion, kind) → plural resource; namespaced unless listed in CLUSTER_SCOPED.
PLURALS = {
    "Namespace": "namespaces",
    "ServiceAccount": "serviceaccounts",
    "ClusterRole": "clusterroles",
    "ClusterRoleBinding": "clusterrolebindings",
    "Role": "roles",
    "RoleBinding": "rolebindings",
    "Deployment": "deployments",
    "StatefulSet": "statefulsets",
    "ReplicaSet": "replicasets",
    "Pod": "pods",
    "Node": "nodes",
    "Event": "events",
    "Lease": "leases",
    "Secret": "secrets",
    "ValidatingAdmissionPolicy": "validatingadmissionpolicies",
    "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings",
}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "Node",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
}


class ApiError(AssertionError):
    def __init__(self, status: int, body: str, what: str) -> None:
        super().__init__(f"{what}: {status} {body[:2000]}")
        self.status = status
        self.body = body


def collection(api_version: str, kind: str, namespace: str | None = None) -> str:
    prefix = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if kind in CLUSTER_SCOPED or namespace is None:
        return f"{prefix}/{PLURALS[kind]}"
    return f"{prefix}/namespaces/{namespace}/{PLURALS[kind]}"


def path_of(obj: Obj) -> str:
    meta = obj["metadata"]
    base = collection(obj["apiVersion"], obj["kind"], meta.get("namespace"))
    return f"{base}/{meta['name']}"


class Api:
    """Async REST calls as the admin (or as whoever ``token`` is)."""

    def __init__(self, url: str, context: ssl.SSLContext, token: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.AsyncClient(base_url=url, verify=context, headers=headers, timeout=30.0)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        params: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200, 201, 202),
    ) -> Obj:
        content = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type} if content is not None else {}
        response = await self.client.request(
            method, path, content=content, headers=headers, params=params
        )
        if response.status_code not in ok:
            raise ApiError(response.status_code, response.text, f"{method} {path}")
        return response.json() if response.content else {}

    async def get(self, path: str) -> Obj:
        return await self.request("GET", path)

    async def maybe_get(self, path: str) -> Obj | None:
        try:
            return await self.request("GET", path)
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def create(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        base = collection(obj["apiVersion"], obj["kind"], meta.get("namespace"))
        return await self.request("POST", base, obj)

    async def apply(self, obj: Obj) -> Obj:
        """Create, or replace what is there (keeping its resourceVersion)."""
        try:
            return await self.create(obj)
        except ApiError as e:
            if e.status != 409:
                raise
        current = await self.get(path_of(obj))
        meta = {**obj["metadata"], "resourceVersion": current["metadata"]["resourceVersion"]}
        return await self.request("PUT", path_of(obj), {**obj, "metadata": meta})

    async def patch(self, path: str, patch: Any, content_type: str = MERGE) -> Obj:
        return await self.request("PATCH", path, patch, content_type=content_type)

    async def delete(self, path: str, grace_s: int | None = None, uid: str | None = None) -> Obj:
        options: Obj = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if grace_s is not None:
            options["gracePeriodSeconds"] = grace_s
        if uid is not None:
            options["preconditions"] = {"uid": uid}
        return await self.request("DELETE", path, options, ok=(200, 202, 404, 409))

    async def items(self, path: str, selector: str | None = None) -> list[Obj]:
        params = {"labelSelector": selector} if selector else None
        body = await self.request("GET", path, params=params)
        items: list[Obj] = body.get("items") or []
        return items


async def eventually(
    check: Callable[[], Awaitable[Any]], timeout_s: float, what: str, step_s: float = 0.05
) -> Any:
    """Poll ``check`` until it returns something truthy (returned); fail at the deadline."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        last = await check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last})")
        await asyncio.sleep(step_s)
