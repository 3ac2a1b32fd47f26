"""The response side of an API call: status → ``KubeError``, Retry-After, watch events.

A ``Status`` body's reason and message go into the error text, truncated (kopf: 256 chars).
429 and 5xx are ``KubeTransientError`` (a ``RetryAfterError`` carrying the server's
``Retry-After`` when it sent one), 409 ``KubeConflictError``, 404 ``KubeNotFoundError``, the
rest (400, 401, 403, 410, 422 …) plain ``KubeError`` with ``status`` set.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from autoscaler.errors import (
    KubeConflictError,
    KubeError,
    KubeNotFoundError,
    KubeTransientError,
    truncate,
)

Obj = dict[str, Any]


class RetryAfterError(KubeTransientError):
    """A 429/503 carrying how long the server wants us to wait."""

    def __init__(self, message: str, status: int, retry_after_s: float | None) -> None:
        super().__init__(message, status)
        self.retry_after_s = retry_after_s


def error_from_status(
    status: int, text: str, what: str, retry_after: str | None = None
) -> KubeError:
    """The ``KubeError`` for an HTTP status and a (``Status``) body."""
    try:
        body = json.loads(text)
        detail = f"{body.get('reason', '')}: {body.get('message', '')}"
    except (ValueError, AttributeError):
        detail = text
    message = f"{what}: HTTP {status}: {truncate(detail)}"
    if status == 409:
        return KubeConflictError(message, status)
    if status == 404:
        return KubeNotFoundError(message, status)
    if status == 429 or status >= 500:
        return RetryAfterError(message, status, _parse_retry_after(retry_after))
    return KubeError(message, status)


def _parse_retry_after(value: str | None) -> float | None:
    try:
        return None if value is None else max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from the API server; use our own backoff


async def events(response: aiohttp.ClientResponse) -> AsyncIterator[Obj]:
    """Newline-delimited watch events; an ``ERROR`` event raises its ``Status`` as KubeError."""
    while True:
        try:
            line = await response.content.readline()
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise KubeTransientError(f"watch: {type(e).__name__}: {e}") from e
        if not line:
            return
        if not line.strip():
            continue
        try:
            event: Obj = json.loads(line)
        except ValueError as e:
            raise KubeTransientError(f"watch: a malformed event: {truncate(line.decode())}") from e
        if event.get("type") == "ERROR":
            status = event.get("object") or {}
            code = int(status.get("code") or 500)
            raise error_from_status(code, json.dumps(status), "watch")
        yield event
