"""The exception tree. Names say what happens next.

    AutoscalerError
    ├── InvalidSpecError        a workload's annotations are wrong: emit an Event, skip it
    ├── InputError              a file or flag given to a command is wrong: exit 2
    ├── SourceError             a metric source failed
    │   └── TransientSourceError    retry next cycle with backoff; hold replicas meanwhile
    ├── KubeError               the Kubernetes API refused or failed
    │   ├── KubeConflictError       409: stale resourceVersion, re-read and retry
    │   ├── KubeNotFoundError       404: the object is gone
    │   └── KubeTransientError      429 / 5xx / connection: retry with backoff
    ├── QueueError              the reliable queue or the registry in Redis failed
    │   └── TransientQueueError     connection, timeout, server loading: retry with backoff
    ├── DrainError              the drain protocol could not complete (timeout, cancel)
    └── ReplicasChangedError    someone else set the replicas since the decision: re-decide

Library exceptions (``redis.*``, ``kubernetes.*``, ``aiohttp.*``) are translated at the
boundary of ``sources``/``kube``/``consumer``/``redisqueue`` and re-raised ``from`` the
original; none escapes those packages.
"""

from __future__ import annotations

# Remote error bodies are cut to this many characters before they reach a log line.
MAX_REMOTE_BODY_CHARS = 256


def truncate(text: str, limit: int = MAX_REMOTE_BODY_CHARS) -> str:
    """Cut a remote body for logging, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more chars)"


class AutoscalerError(Exception):
    """Root of every error this package raises on purpose."""


class InvalidSpecError(AutoscalerError):
    """A workload's annotation has a bad value; names the key, the value and the form expected."""

    def __init__(self, key: str, value: str | None, expected: str) -> None:
        self.key = key
        self.value = value
        self.expected = expected
        shown = "missing" if value is None else repr(truncate(value, 80))
        super().__init__(f"annotation {key}: {shown}: expected {expected}")


class InputError(AutoscalerError):
    """A file or flag given to a command is wrong; names the file and line or the flag."""


class SourceError(AutoscalerError):
    """A metric source failed."""


class TransientSourceError(SourceError):
    """The source may answer next time (connection, timeout, server busy): retry with backoff."""


class KubeError(AutoscalerError):
    """The Kubernetes API refused or failed."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class KubeConflictError(KubeError):
    """409 Conflict: the object changed since it was read."""


class KubeNotFoundError(KubeError):
    """404 Not Found."""


class KubeTransientError(KubeError):
    """429, 5xx or a connection failure: retry with backoff."""


class QueueError(AutoscalerError):
    """A reliable-queue or registry operation in Redis failed (e.g. WRONGTYPE on the queue key)."""


class TransientQueueError(QueueError):
    """Redis may answer next time (connection, timeout, loading): retry with backoff."""


class DrainError(AutoscalerError):
    """The drain protocol could not complete."""


class ReplicasChangedError(AutoscalerError):
    """A conditional scale found another replica count than expected: someone else (``kubectl
    scale``, a GitOps sync, an HPA) scaled meanwhile. Their value stands; decide again."""

    def __init__(self, message: str, found: int | None = None) -> None:
        self.found = found
        super().__init__(message)
