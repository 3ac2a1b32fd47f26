"""The API operations the controller sends, without the generated API classes.

``kubernetes.aio``'s generated ``CoreV1Api``, ``AppsV1Api``, … each import a module of
hundreds of methods and ~160 pydantic models to validate their arguments: building the four
the controller used cost ~0.9 s of CPU and ~33 MB of RSS at every start
(docs/performance.md, goals 5 and 6), for the 30 or so operations it sends. Each
``Operation`` here sends the request the generated ``*_without_preload_content`` twin sends
(``tests/test_kube_api.py`` compares them, request by request: path quoting, query
encoding — ``watch=True`` is ``watch=true`` —, Accept and Content-Type, the JSON body)
through ``kube.transport``, and returns the raw aiohttp response, so ``KubeClient`` judges
the status and parses the JSON. Its ``__name__`` is the generated method's (``KubeClient``
names the verb from it).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from .transport import Transport

ACCEPT = "application/json"
# What the generated client sends without a ``_content_type``: a PATCH with a list body is a
# JSON patch, with any other body a strategic-merge patch; other bodies are JSON.
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"


def _query_name(keyword: str) -> str:
    """``label_selector`` → ``labelSelector``, ``_continue`` → ``continue`` (as generated)."""
    head, *rest = keyword.lstrip("_").split("_")
    return head + "".join(word.capitalize() for word in rest)


def _query_value(value: Any) -> str:
    """As the generated client encodes a query value: booleans lower-case."""
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


class Operation:
    """One API operation: ``await op(*path_args[, body], **query)`` → the aiohttp response.

    ``path``'s ``{name}``/``{namespace}`` are filled from the positional arguments in the
    order of ``params`` (the generated methods' order: name, then namespace); ``body``:
    the next positional argument is the request body. Keywords ``_request_timeout``,
    ``_content_type`` and ``_headers`` are the generated methods'; any other keyword is a
    query parameter (``label_selector=…``, ``_continue=…``, ``watch=True``).
    """

    def __init__(
        self,
        transport: Transport,
        name: str,
        method: str,
        path: str,
        params: tuple[str, ...],
        *,
        body: bool = False,
    ) -> None:
        self.transport = transport
        self.__name__ = name
        self.method = method
        self.path = path
        self.params = params
        self.body = body

    def __repr__(self) -> str:
        return f"<Operation {self.__name__}: {self.method} {self.path}>"

    async def __call__(
        self,
        *args: Any,
        _request_timeout: float | None = None,
        _content_type: str | None = None,
        _headers: dict[str, str] | None = None,
        **query: Any,
    ) -> Any:
        expected = len(self.params) + self.body
        if len(args) != expected:
            raise TypeError(f"{self.__name__}() takes {expected} positional arguments")
        path = self.path
        for param, value in zip(self.params, args, strict=False):
            path = path.replace(f"{{{param}}}", quote(str(value), safe=""))
        body = args[-1] if self.body else None
        headers = dict(_headers or {})
        headers.setdefault("Accept", ACCEPT)
        if body is not None:
            if _content_type:
                headers["Content-Type"] = _content_type
            elif self.method == "PATCH":
                patch = JSON_PATCH if isinstance(body, list) else STRATEGIC_MERGE_PATCH
                headers["Content-Type"] = patch
            else:
                headers["Content-Type"] = ACCEPT
        queries = [(_query_name(k), _query_value(v)) for k, v in query.items() if v is not None]
        data = json.dumps(body).encode() if body is not None else None
        return await self.transport.request(
            self.method, path, query=queries, headers=headers, body=data, timeout_s=_request_timeout
        )


_WORKLOAD_KINDS = {
    "deployment": "deployments",
    "stateful_set": "statefulsets",
    "replica_set": "replicasets",
}


class Api:
    """A group's operations by the generated method names (``kube.apps.read_…``)."""

    def __init__(self, operations: list[Operation]) -> None:
        for op in operations:
            setattr(self, op.__name__, op)

    def __getattr__(self, name: str) -> Any:  # only for a name not defined above
        raise AttributeError(f"{name}: not an operation the controller sends (kube.api)")


def _crud(
    transport: Transport,
    base: str,
    snake: str,
    plural: str,
    *,
    verbs: tuple[str, ...],
) -> list[Operation]:
    """The operations ``verbs`` of one namespaced resource under ``base`` (``/api/v1``)."""
    collection = f"{base}/namespaces/{{namespace}}/{plural}"
    item = f"{collection}/{{name}}"
    ns, named = ("namespace",), ("name", "namespace")
    table = {
        "list": Operation(transport, f"list_namespaced_{snake}", "GET", collection, ns),
        "list_all": Operation(
            transport, f"list_{snake}_for_all_namespaces", "GET", f"{base}/{plural}", ()
        ),
        "read": Operation(transport, f"read_namespaced_{snake}", "GET", item, named),
        "create": Operation(
            transport, f"create_namespaced_{snake}", "POST", collection, ns, body=True
        ),
        "patch": Operation(transport, f"patch_namespaced_{snake}", "PATCH", item, named, body=True),
        "read_scale": Operation(
            transport, f"read_namespaced_{snake}_scale", "GET", f"{item}/scale", named
        ),
        "patch_scale": Operation(
            transport,
            f"patch_namespaced_{snake}_scale",
            "PATCH",
            f"{item}/scale",
            named,
            body=True,
        ),
    }
    return [table[verb] for verb in verbs]


def build(transport: Transport) -> tuple[Api, Api, Api, Api]:
    """``apps``, ``core``, ``coordination``, ``autoscaling``: what the controller sends."""
    workload_verbs = ("list", "list_all", "read", "patch", "read_scale", "patch_scale")
    apps = Api(
        [
            op
            for snake, plural in _WORKLOAD_KINDS.items()
            for op in _crud(transport, "/apis/apps/v1", snake, plural, verbs=workload_verbs)
        ]
    )
    core = Api(
        _crud(transport, "/api/v1", "pod", "pods", verbs=("list", "read", "patch"))
        + _crud(transport, "/api/v1", "event", "events", verbs=("create", "read", "patch"))
        + _crud(transport, "/api/v1", "secret", "secrets", verbs=("read",))
    )
    coordination = Api(
        _crud(
            transport,
            "/apis/coordination.k8s.io/v1",
            "lease",
            "leases",
            verbs=("read", "create", "patch"),
        )
    )
    autoscaling = Api(
        _crud(
            transport,
            "/apis/autoscaling/v2",
            "horizontal_pod_autoscaler",
            "horizontalpodautoscalers",
            verbs=("list", "list_all"),
        )
    )
    return apps, core, coordination, autoscaling
