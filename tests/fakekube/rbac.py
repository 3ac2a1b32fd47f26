"""Request attributes as the API server's authorizer sees them, and an RBAC evaluator.

``request_info`` follows ``k8s.io/apiserver/pkg/endpoints/request.RequestInfoFactory``:
GET on a collection is ``list`` (``watch`` with ``?watch=true|1``), GET on an object
``get``, POST ``create``, PUT ``update``, PATCH ``patch``, DELETE ``delete`` (on a
collection ``deletecollection``). A list or watch pinned to one object with
``fieldSelector=metadata.name=x`` carries that name, as RBAC ``resourceNames`` expects.
``rbac_allows`` evaluates a ClusterRole (or Role) dict the way the RBAC authorizer does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.fakekube.selectors import field_selector_name

_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
# Values of ?watch= the server reads as true (strconv.ParseBool).
TRUE_VALUES = frozenset({"1", "t", "T", "true", "TRUE", "True"})


@dataclass
class RecordedRequest:
    """One request the fake served; ``status`` is filled in when the response is sent."""

    method: str
    path: str
    query: dict[str, str]
    verb: str  # RBAC verb: get list watch create update patch delete deletecollection
    is_resource: bool = False
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    status: int | None = None
    body: Any = field(default=None, repr=False)

    @property
    def rbac(self) -> tuple[str, str, str, str]:
        """(apiGroup, resource, subresource, verb): what a Role rule must allow."""
        return (self.api_group, self.resource, self.subresource, self.verb)


def request_info(method: str, path: str, query: Mapping[str, str]) -> RecordedRequest:
    method = method.upper()
    record = RecordedRequest(method=method, path=path, query=dict(query), verb=method.lower())
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["api"] and len(parts) >= 2:
        record.api_version, rest = parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        record.api_group, record.api_version, rest = parts[1], parts[2], parts[3:]
    else:
        return record  # a non-resource URL: /version, /api, /apis/apps, /healthz ...
    if not rest:
        return record  # discovery of one group version
    record.is_resource = True
    record.verb = _VERBS.get(method, "get")
    if rest[0] == "namespaces" and len(rest) > 1:
        record.namespace = rest[1]
        # /api/v1/namespaces/{name}[/status|/finalize] is the namespace itself.
        if len(rest) > 2 and rest[2] not in ("status", "finalize"):
            rest = rest[2:]
    record.resource = rest[0]
    record.name = rest[1] if len(rest) > 1 else ""
    record.subresource = rest[2] if len(rest) > 2 else ""
    if not record.name:
        if method in ("GET", "HEAD"):
            record.verb = "watch" if query.get("watch") in TRUE_VALUES else "list"
            record.name = field_selector_name(query.get("fieldSelector")) or ""
        elif method == "DELETE":
            record.verb = "deletecollection"
    return record


def rbac_tuple(request: RecordedRequest) -> tuple[str, str, str, str]:
    """(apiGroup, resource, subresource, verb) of a recorded request."""
    return request.rbac


def _rule_allows(rule: Mapping[str, Any], request: RecordedRequest) -> bool:
    verbs = rule.get("verbs") or []
    if "*" not in verbs and request.verb not in verbs:
        return False
    if not request.is_resource:
        return any(url == request.path or (url.endswith("*") and request.path.startswith(url[:-1]))
                   for url in rule.get("nonResourceURLs") or [])
    groups = rule.get("apiGroups") or []
    if "*" not in groups and request.api_group not in groups:
        return False
    wanted = request.resource + (f"/{request.subresource}" if request.subresource else "")
    resources = rule.get("resources") or []
    if not any(r in ("*", wanted) or (r == f"*/{request.subresource}" and request.subresource)
               for r in resources):
        return False
    names = rule.get("resourceNames") or []
    return not names or request.name in names


def rbac_allows(role: Mapping[str, Any], request: RecordedRequest) -> bool:
    """Whether any rule of ``role`` (a ClusterRole/Role as a dict) permits ``request``."""
    return any(_rule_allows(rule, request) for rule in role.get("rules") or [])


def denied(role: Mapping[str, Any], requests: list[RecordedRequest]) -> list[RecordedRequest]:
    """The resource requests ``role`` would not permit (handy in an ``assert not ...``)."""
    return [r for r in requests if r.is_resource and not rbac_allows(role, r)]
