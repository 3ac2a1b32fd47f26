"""One-shot listing of the annotated workloads of a cluster, for ``autoscaler check --cluster``.

Lists Deployments and StatefulSets labelled ``queue-autoscaler.io/enabled=true`` (selected
server-side) across all namespaces or in the given ones, and returns them as the plain
dicts the API sent (camelCase keys, as in a manifest), each with ``apiVersion`` and
``kind`` filled in (list responses leave them out of the items). Kubernetes client and
aiohttp exceptions are translated to ``KubeError`` here; none escapes.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiohttp
from kubernetes.aio import client, config
from kubernetes.aio.client.exceptions import ApiException
from kubernetes.aio.config.config_exception import ConfigException

from autoscaler.errors import (
    KubeError,
    KubeNotFoundError,
    KubeTransientError,
    truncate,
)

ENABLED_SELECTOR = "queue-autoscaler.io/enabled=true"
PAGE_SIZE = 500  # items per list request; large clusters are read in pages (continue tokens)
REQUEST_TIMEOUT_S = 30.0
# (apiVersion, kind, method for all namespaces, method for one namespace)
_KINDS = (
    (
        "apps/v1",
        "Deployment",
        "list_deployment_for_all_namespaces_without_preload_content",
        "list_namespaced_deployment_without_preload_content",
    ),
    (
        "apps/v1",
        "StatefulSet",
        "list_stateful_set_for_all_namespaces_without_preload_content",
        "list_namespaced_stateful_set_without_preload_content",
    ),
)


def list_annotated_workloads(kubeconfig: str | None, namespaces: list[str]) -> list[dict[str, Any]]:
    """The labelled Deployments and StatefulSets, as plain dicts (blocking; runs its own loop).

    ``kubeconfig`` None: ``$KUBECONFIG`` or ``~/.kube/config`` if present, else in-cluster.
    ``namespaces`` empty: all namespaces. Raises ``KubeError`` on any failure.
    """
    return asyncio.run(alist_annotated_workloads(kubeconfig, namespaces))


async def alist_annotated_workloads(
    kubeconfig: str | None, namespaces: list[str]
) -> list[dict[str, Any]]:
    """The coroutine behind ``list_annotated_workloads``."""
    configuration = await _load_configuration(kubeconfig)
    try:
        async with client.ApiClient(configuration) as api_client:
            apps = client.AppsV1Api(api_client)
            workloads: list[dict[str, Any]] = []
            for api_version, kind, all_ns, one_ns in _KINDS:
                if namespaces:
                    for namespace in namespaces:
                        method = getattr(apps, one_ns)
                        workloads += await _list_pages(method, api_version, kind, namespace)
                else:
                    workloads += await _list_pages(getattr(apps, all_ns), api_version, kind, None)
            return workloads
    except ApiException as e:
        raise _translate_status(e.status or 0, str(e.body or e.reason or "")) from e
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        raise KubeTransientError(f"cannot reach the Kubernetes API: {e}") from e


async def _load_configuration(kubeconfig: str | None) -> client.Configuration:
    configuration = client.Configuration()
    try:
        if _has_kubeconfig(kubeconfig):
            await config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, client_configuration=configuration
            )
        else:
            config.load_incluster_config(  # type: ignore[no-untyped-call]
                client_configuration=configuration
            )
    except (ConfigException, OSError, ValueError) as e:
        raise KubeError(f"cannot load Kubernetes configuration: {e}") from e
    return configuration


def _has_kubeconfig(kubeconfig: str | None) -> bool:
    """An explicit file, or ``$KUBECONFIG`` / ``~/.kube/config`` present (else in-cluster)."""
    if kubeconfig is not None:
        if not os.path.isfile(kubeconfig):
            raise KubeError(f"kubeconfig {kubeconfig}: no such file")
        return True
    default = os.environ.get("KUBECONFIG", "~/.kube/config").split(os.pathsep)[0]
    return os.path.exists(os.path.expanduser(default))


async def _list_pages(
    method: Any, api_version: str, kind: str, namespace: str | None
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        kwargs: dict[str, Any] = {
            "label_selector": ENABLED_SELECTOR,
            "limit": PAGE_SIZE,
            "_continue": token,
            "_request_timeout": REQUEST_TIMEOUT_S,
        }
        if namespace is not None:
            kwargs["namespace"] = namespace
        response = await method(**kwargs)
        try:
            if response.status >= 400:
                raise _translate_status(response.status, await response.text())
            body = await response.json()
        finally:
            response.release()
        for item in body.get("items") or []:
            items.append({"apiVersion": api_version, "kind": kind, **item})
        token = (body.get("metadata") or {}).get("continue") or None
        if token is None:
            return items


def _translate_status(status: int, body: str) -> KubeError:
    message = f"Kubernetes API answered {status}: {truncate(body)}"
    if status == 404:
        return KubeNotFoundError(message, status)
    if status == 429 or status >= 500:
        return KubeTransientError(message, status)
    return KubeError(message, status)
