"""The apiserver's audit log, read back: what the controller's ServiceAccount asked, and got.

The policy (``controlplane.AUDIT_POLICY``) logs only that ServiceAccount's requests, at
``Metadata`` level, one JSON event per line at ``ResponseComplete`` (``ResponseStarted``
too for watches). The log backend is blocking: an event is in the file before the response
reaches the client, so reading the file right after a request sees it.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


@dataclass(frozen=True)
class Request:
    at: float  # epoch seconds the apiserver received it
    verb: str
    group: str
    resource: str  # "deployments/scale" for a subresource, as RBAC names it
    namespace: str
    name: str
    code: int
    decision: str  # RBAC's: "allow" or "forbid"
    user_agent: str

    @property
    def grant(self) -> tuple[str, str, str]:
        return (self.group, self.resource, self.verb)

    @property
    def is_write(self) -> bool:
        return self.verb in WRITE_VERBS


def _epoch(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _request(event: dict[str, Any]) -> Request | None:
    ref = event.get("objectRef")
    if ref is None or event.get("stage") not in ("ResponseComplete", "Panic"):
        return None  # non-resource URLs (discovery), and the first stage of a watch
    resource = ref.get("resource", "")
    if ref.get("subresource"):
        resource += "/" + ref["subresource"]
    annotations = event.get("annotations") or {}
    return Request(
        at=_epoch(event["requestReceivedTimestamp"]),
        verb=event["verb"],
        group=ref.get("apiGroup", ""),
        resource=resource,
        namespace=ref.get("namespace", ""),
        name=ref.get("name", ""),
        code=int((event.get("responseStatus") or {}).get("code", 0)),
        decision=annotations.get("authorization.k8s.io/decision", ""),
        user_agent=event.get("userAgent", ""),
    )


def read(path: Path) -> list[Request]:
    out = []
    for line in path.read_text().splitlines():
        request = _request(json.loads(line))
        if request is not None:
            out.append(request)
    return out


def writes(requests: Iterable[Request], since: float, *, leases: bool = False) -> list[Request]:
    """Writes received at or after ``since``; Lease renewals left out unless ``leases``."""
    return [
        r for r in requests if r.at >= since and r.is_write and (leases or r.resource != "leases")
    ]


def granted(role: dict[str, Any]) -> set[tuple[str, str, str]]:
    return {
        (g, r, v)
        for rule in role["rules"]
        for g in rule.get("apiGroups", [])
        for r in rule.get("resources", [])
        for v in rule.get("verbs", [])
    }
