"""Scale-in protection over HTTP: the sidecar's ``PUT /protection`` and ``GET /protection``.

A processor busy with work it must not lose (a long job) asks the sidecar in its pod
that the pod not be removed by a scale-down (ECS's task scale-in protection, in seconds)::

    PUT /protection  {"enabled": true, "expiresInSeconds": 3600}
    PUT /protection  {"enabled": false}
    GET /protection  → {"enabled": true, "expiresInSeconds": 3600, "expiresAt": "…Z"}

``expiresInSeconds`` defaults to 7200 and is at most 172800 (48 h); each PUT replaces the
previous protection. It is recorded in Redis with a TTL (``redisqueue.protect``), so the
controller sees it and it ends by itself. Bad input is answered 400 with one line naming
the field. Served on the sidecar's HTTP port (``--metrics-port``), to loopback clients
only: that port is open to the pod network for Prometheus, and only a container of this
pod may hold the pod in place (others get 403).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from redis.asyncio import Redis

from autoscaler import redisqueue
from autoscaler.errors import QueueError

DEFAULT_PROTECTION_S = 7200  # as ECS's default of 120 minutes
FIELDS = ("enabled", "expiresInSeconds")


@dataclass(frozen=True)
class ProtectionRequest:
    """A validated ``PUT /protection`` body."""

    enabled: bool
    expires_in_s: int = DEFAULT_PROTECTION_S


def parse_request(body: bytes) -> ProtectionRequest:
    """Validate a ``PUT /protection`` body; ValueError with one line naming the problem."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"body is not JSON ({e})") from e
    if not isinstance(data, dict):
        example = '{"enabled": true}'
        raise ValueError(f"body must be a JSON object such as {example}, not {body[:40]!r}")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown field {unknown[0][:40]!r} (fields: {', '.join(FIELDS)})")
    enabled = data.get("enabled")
    if not isinstance(enabled, bool):
        raise ValueError(f"enabled: must be true or false, not {json.dumps(enabled)[:40]}")
    seconds = data.get("expiresInSeconds", DEFAULT_PROTECTION_S)
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise ValueError(f"expiresInSeconds: must be a whole number of seconds, "
                         f"not {json.dumps(seconds)[:40]}")  # fmt: skip
    if not 1 <= seconds <= redisqueue.MAX_PROTECTION_S:
        raise ValueError(
            f"expiresInSeconds: {seconds} is out of range 1..{redisqueue.MAX_PROTECTION_S}"
        )
    return ProtectionRequest(enabled, seconds)


def describe(remaining_ms: int, now_s: float) -> dict[str, Any]:
    """The JSON of a protection state: ``expiresAt`` is ``now_s`` plus what Redis has left."""
    if remaining_ms <= 0:
        return {"enabled": False}
    at = datetime.fromtimestamp(now_s + remaining_ms / 1000, UTC)
    return {
        "enabled": True,
        "expiresInSeconds": math.ceil(remaining_ms / 1000),
        "expiresAt": at.isoformat(timespec="seconds").replace("+00:00", "Z"),
    }


def from_loopback(remote: str | None) -> bool:
    try:
        address = ipaddress.ip_address(remote or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


class ProtectionEndpoint:
    """The two handlers; ``redis`` is set once the sidecar has its client (503 before)."""

    def __init__(
        self, consumer_id: str, queue: str, log: logging.LoggerAdapter[logging.Logger]
    ) -> None:
        self.consumer_id = consumer_id
        self.queue = queue
        self.redis: Redis | None = None
        self._log = log

    def routes(self) -> list[web.RouteDef]:
        return [web.put("/protection", self.put), web.get("/protection", self.get)]

    async def put(self, request: web.Request) -> web.Response:
        redis = self._redis_for(request)
        if isinstance(redis, web.Response):
            return redis
        try:
            wanted = parse_request(await request.read())
        except ValueError as e:
            return _error(400, f"PUT /protection: {e}")
        seconds = wanted.expires_in_s if wanted.enabled else 0
        try:
            remaining_ms = await redisqueue.protect(redis, self.consumer_id, seconds, self.queue)
        except QueueError as e:
            return _error(503, f"could not record the protection in Redis: {e}")
        if wanted.enabled:
            self._log.info("scale-in protection on for %ds", seconds)
        else:
            self._log.info("scale-in protection off")
        return web.json_response(describe(remaining_ms, time.time()))

    async def get(self, request: web.Request) -> web.Response:
        redis = self._redis_for(request)
        if isinstance(redis, web.Response):
            return redis
        try:
            remaining_ms = await redisqueue.protection_ms(redis, self.consumer_id, self.queue)
        except QueueError as e:
            return _error(503, f"could not read the protection from Redis: {e}")
        return web.json_response(describe(remaining_ms, time.time()))

    def _redis_for(self, request: web.Request) -> Redis | web.Response:
        """The client to answer ``request`` with, or the refusal to send instead."""
        if not from_loopback(request.remote):
            return _error(403, "/protection is served to containers of this pod only "
                          "(connect to 127.0.0.1)")  # fmt: skip
        if self.redis is None:
            return _error(503, "not connected to Redis yet")
        return self.redis


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
