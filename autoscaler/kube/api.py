"""The API operations the controller sends, without the generated API classes.

``kubernetes.aio``'s generated ``CoreV1Api``, ``AppsV1Api``, … each import a module of
hundreds of methods and ~160 pydantic models to validate their arguments: building the four
the controller used cost ~0.9 s of CPU and ~33 MB of RSS at every start
(docs/performance.md, goals 5 and 6), for the 30 or so operations it sends. Each
``Operation`` here sends its request the way the generated ``*_without_preload_content``
twin does — the same ``ApiClient.param_serialize`` (authentication, path quoting, query
encoding: ``watch=True`` is ``watch=true``) and ``ApiClient.call_api`` — and returns the raw
aiohttp response, so ``KubeClient`` judges the status and parses the JSON as before. Its
``__name__`` is the generated method's (``KubeClient`` names the verb from it).
"""

from __future__ import annotations

from typing import Any

from kubernetes.aio import client as k8s

ACCEPT = "application/json"
# What the generated methods send without a ``_content_type``: a PATCH's default is the
# first JSON type it accepts (JSON patch); other bodies are JSON.
DEFAULT_PATCH_TYPE = "application/json-patch+json"


def _query_name(keyword: str) -> str:
    """``label_selector`` → ``labelSelector``, ``_continue`` → ``continue`` (as generated)."""
    head, *rest = keyword.lstrip("_").split("_")
    return head + "".join(word.capitalize() for word in rest)


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
        api_client: k8s.ApiClient,
        name: str,
        method: str,
        path: str,
        params: tuple[str, ...],
        *,
        body: bool = False,
    ) -> None:
        self.api_client = api_client
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
        path_params = dict(zip(self.params, args, strict=False))
        body = args[-1] if self.body else None
        headers: dict[str, str | None] = dict(_headers or {})
        headers.setdefault("Accept", ACCEPT)
        if _content_type:
            headers["Content-Type"] = _content_type
        elif self.method == "PATCH":
            headers["Content-Type"] = DEFAULT_PATCH_TYPE
        queries = [(_query_name(k), v) for k, v in query.items() if v is not None]
        serialized = await self.api_client.param_serialize(
            method=self.method,
            resource_path=self.path,
            path_params=path_params,
            query_params=queries,
            header_params=headers,
            body=body,
            post_params=[],
            files={},
            auth_settings=["BearerToken"],
            collection_formats={},
        )
        response = await self.api_client.call_api(
            *serialized, _preload_content=False, _request_timeout=_request_timeout
        )
        return response.response


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
    api_client: k8s.ApiClient,
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
        "list": Operation(api_client, f"list_namespaced_{snake}", "GET", collection, ns),
        "list_all": Operation(
            api_client, f"list_{snake}_for_all_namespaces", "GET", f"{base}/{plural}", ()
        ),
        "read": Operation(api_client, f"read_namespaced_{snake}", "GET", item, named),
        "create": Operation(
            api_client, f"create_namespaced_{snake}", "POST", collection, ns, body=True
        ),
        "patch": Operation(
            api_client, f"patch_namespaced_{snake}", "PATCH", item, named, body=True
        ),
        "read_scale": Operation(
            api_client, f"read_namespaced_{snake}_scale", "GET", f"{item}/scale", named
        ),
        "patch_scale": Operation(
            api_client,
            f"patch_namespaced_{snake}_scale",
            "PATCH",
            f"{item}/scale",
            named,
            body=True,
        ),
    }
    return [table[verb] for verb in verbs]


def build(api_client: k8s.ApiClient) -> tuple[Api, Api, Api, Api]:
    """``apps``, ``core``, ``coordination``, ``autoscaling``: what the controller sends."""
    workload_verbs = ("list", "list_all", "read", "patch", "read_scale", "patch_scale")
    apps = Api(
        [
            op
            for snake, plural in _WORKLOAD_KINDS.items()
            for op in _crud(api_client, "/apis/apps/v1", snake, plural, verbs=workload_verbs)
        ]
    )
    core = Api(
        _crud(api_client, "/api/v1", "pod", "pods", verbs=("list", "read", "patch"))
        + _crud(api_client, "/api/v1", "event", "events", verbs=("create", "read", "patch"))
        + _crud(api_client, "/api/v1", "secret", "secrets", verbs=("read",))
    )
    coordination = Api(
        _crud(
            api_client,
            "/apis/coordination.k8s.io/v1",
            "lease",
            "leases",
            verbs=("read", "create", "patch"),
        )
    )
    autoscaling = Api(
        _crud(
            api_client,
            "/apis/autoscaling/v2",
            "horizontal_pod_autoscaler",
            "horizontalpodautoscalers",
            verbs=("list", "list_all"),
        )
    )
    return apps, core, coordination, autoscaling
