"""Shared vocabulary of the fake API server: objects, errors, the fake clock.

Terms:
- *object*: a Kubernetes object as a JSON-shaped ``dict`` (``Obj``), exactly as it goes on
  the wire (camelCase keys, string resourceVersion).
- *storage key*: ``(group, plural)`` naming one store of objects; two API versions of the
  same resource (autoscaling/v1 and v2 HPAs, core and events.k8s.io Events) share one.
- *KubeError*: an error that the HTTP layer turns into a real ``Status`` object.
"""

from __future__ import annotations

import copy
import datetime as dt
import random
import uuid
from typing import Any

Obj = dict[str, Any]
StorageKey = tuple[str, str]

# Status reasons by HTTP code, as apimachinery's StatusReason constants spell them.
REASONS: dict[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class KubeError(Exception):
    """An API error; ``status()`` is the ``Status`` body the server answers with."""

    def __init__(
        self,
        code: int,
        message: str,
        *,
        reason: str | None = None,
        details: Obj | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> Obj:
        return status_body(self.code, self.reason, self.message, self.details)


def status_body(code: int, reason: str, message: str, details: Obj | None = None) -> Obj:
    body: Obj = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if code < 400 else "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def not_found(resource: str, name: str, group: str = "") -> KubeError:
    qualified = f"{resource}.{group}" if group else resource
    return KubeError(
        404,
        f'{qualified} "{name}" not found',
        details={"name": name, "group": group, "kind": resource},
    )


def conflict(resource: str, name: str, group: str = "") -> KubeError:
    qualified = f"{resource}.{group}" if group else resource
    return KubeError(
        409,
        f'Operation cannot be fulfilled on {qualified} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        details={"name": name, "group": group, "kind": resource},
    )


def meta(obj: Obj) -> Obj:
    """``obj["metadata"]``, created if missing."""
    m = obj.setdefault("metadata", {})
    assert isinstance(m, dict)
    return m


def labels_of(obj: Obj) -> dict[str, str]:
    return dict(obj.get("metadata", {}).get("labels") or {})


def deep(obj: Obj) -> Obj:
    return copy.deepcopy(obj)


def format_time(when: dt.datetime, *, micro: bool = False) -> str:
    """RFC 3339 in UTC: seconds for metav1.Time, microseconds for metav1.MicroTime."""
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ"
    return when.astimezone(dt.UTC).strftime(fmt)


class FakeClock:
    """A clock that only moves forward, one ``step`` per ``tick()``.

    Kubernetes timestamps have one-second resolution; ticking by a second per created
    object makes "newer pod" orderings deterministic and visible to the client.
    """

    DEFAULT_START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)

    def __init__(self, start: dt.datetime | None = None, step_s: float = 1.0) -> None:
        self._now = start or self.DEFAULT_START
        self._step = dt.timedelta(seconds=step_s)

    def now(self) -> dt.datetime:
        return self._now

    def tick(self) -> dt.datetime:
        self._now += self._step
        return self._now

    def advance(self, seconds: float) -> dt.datetime:
        self._now += dt.timedelta(seconds=seconds)
        return self._now

    def stamp(self) -> str:
        """Tick, and return the new time formatted as a metav1.Time."""
        return format_time(self.tick())


class Ids:
    """Deterministic uids and random name suffixes (seeded, so runs repeat exactly)."""

    # k8s.io/apimachinery/pkg/util/rand: no vowels, no confusable digits.
    ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"

    def __init__(self, seed: int = 0) -> None:
        self._rng = random.Random(seed)

    def uid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def suffix(self, n: int = 5) -> str:
        return "".join(self._rng.choice(self.ALPHANUMS) for _ in range(n))
