"""``kube.api``'s operations send exactly what the generated ``kubernetes.aio`` methods send.

Both go to one small HTTP server that records each request as it arrives (method, path,
query, Accept, Content-Type, body, Authorization); every operation the controller sends is
called both ways with the same arguments, and the two recordings must be equal.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from kubernetes.aio import client as k8s

from autoscaler.kube import api
from autoscaler.kube.client import MERGE_PATCH
from autoscaler.kube.config import Connection, StaticToken
from autoscaler.kube.transport import Transport

GENERATED = {
    "apps": k8s.AppsV1Api,
    "core": k8s.CoreV1Api,
    "coordination": k8s.CoordinationV1Api,
    "autoscaling": k8s.AutoscalingV2Api,
}
QUERIES: list[dict[str, Any]] = [
    {},
    {"label_selector": "queue-autoscaler.io/enabled=true", "limit": 500, "_continue": "abc"},
    {"watch": True, "allow_watch_bookmarks": True, "timeout_seconds": 300, "resource_version": "7"},
]

PATCH = {"metadata": {"annotations": {"a": "b"}}, "spec": {"replicas": 3}}
BODIES: dict[str, Any] = {  # a create's body is checked against its model by the generated one
    "create_namespaced_event": {
        "metadata": {"name": "w.1", "namespace": "namespace-1"},
        "involvedObject": {"kind": "Deployment", "name": "w", "namespace": "namespace-1"},
        "reason": "ScaledUp",
        "message": "scaled up to 3",
        "type": "Normal",
        "count": 1,
        "source": {"component": "queue-autoscaler"},
    },
    "create_namespaced_lease": {
        "metadata": {"name": "queue-autoscaler", "namespace": "namespace-1"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15, "leaseTransitions": 0},
    },
}


def _operations() -> list[tuple[str, api.Operation]]:
    unused = Transport(Connection("http://127.0.0.1:1", None, StaticToken("Bearer t0ken")))
    apps, core, coordination, autoscaling = api.build(unused)
    groups = {"apps": apps, "core": core, "coordination": coordination, "autoscaling": autoscaling}
    return [
        (group, op)
        for group, holder in groups.items()
        for op in vars(holder).values()
        if isinstance(op, api.Operation)
    ]


OPERATIONS = _operations()


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[str, list[tuple[Any, ...]]]]:
    seen: list[tuple[Any, ...]] = []

    async def record(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append(
            (
                request.method,
                request.path,
                sorted(request.query.items()),
                request.headers.get("Accept"),
                request.headers.get("Content-Type") if body else None,
                json.loads(body) if body else None,
                request.headers.get("Authorization"),
            )
        )
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


def test_every_operation_the_controller_names_exists() -> None:
    names = {op.__name__ for _, op in OPERATIONS}
    assert {
        "read_namespaced_deployment_scale",
        "patch_namespaced_stateful_set_scale",
        "list_deployment_for_all_namespaces",
        "list_namespaced_stateful_set",
        "list_horizontal_pod_autoscaler_for_all_namespaces",
        "create_namespaced_event",
        "patch_namespaced_event",
        "read_namespaced_secret",
        "list_namespaced_pod",
        "patch_namespaced_pod",
        "read_namespaced_lease",
        "create_namespaced_lease",
        "patch_namespaced_lease",
    } <= names


@pytest.mark.parametrize(("group", "op"), OPERATIONS, ids=[op.__name__ for _, op in OPERATIONS])
async def test_an_operation_sends_what_the_generated_method_sends(
    recorder: tuple[str, list[tuple[Any, ...]]], group: str, op: api.Operation
) -> None:
    url, seen = recorder
    configuration = k8s.Configuration(host=url)
    configuration.api_key = {"BearerToken": "Bearer t0ken"}
    transport = Transport(Connection(url, None, StaticToken("Bearer t0ken")))
    async with k8s.ApiClient(configuration) as api_client, contextlib.aclosing(transport):
        ours = api.Operation(transport, op.__name__, op.method, op.path, op.params, body=op.body)
        generated = getattr(GENERATED[group](api_client), f"{op.__name__}_without_preload_content")
        names = [f"{p}-1" for p in op.params]
        bodies: list[Any] = [BODIES.get(op.__name__, PATCH)] if op.body else [None]
        if op.method == "PATCH":  # a list body is a JSON patch, a mapping a strategic merge
            bodies.append([{"op": "replace", "path": "/spec/replicas", "value": 3}])
        queries = QUERIES if op.__name__.startswith("list_") else [{}]
        types: list[dict[str, str]] = [{}, {"_content_type": MERGE_PATCH}]
        variants = [{**q, **t} for q in queries for t in (types if op.method == "PATCH" else [{}])]
        for body in bodies:
            args = names + ([body] if op.body else [])
            for kwargs in variants:
                for method in (generated, ours):
                    response = await method(*args, _request_timeout=5.0, **kwargs)
                    response.release()
                assert seen[-1] == seen[-2], kwargs
        assert len(seen) == 2 * len(variants) * len(bodies)
