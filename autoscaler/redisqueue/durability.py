"""Can this Redis lose what it was given? Persistence and eviction, read from the server.

At-least-once delivery holds only while Redis keeps the lists: a server with neither AOF
nor RDB snapshots loses every queue on a restart, and an eviction policy may delete a
queue or a processing list under memory pressure (``allkeys-*`` any key; ``volatile-*``
only keys with a TTL, which ours never have — still reported: a user's TTL on a queue
would make it evictable). Read with ``CONFIG GET``, falling back to ``INFO`` where a
managed Redis renames or forbids CONFIG; what cannot be read is reported as unknown,
never as a risk.

``read_memory`` reads ``INFO memory`` (one round trip): how full the server is, for the
``redis-memory-high``/``-low`` watermarks. A server with ``maxmemory 0`` has no limit to
compare with (it grows until the machine's OOM killer stops it).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.exceptions as rexc
from redis.asyncio import Redis

from autoscaler.redisqueue.scripts import translated


@dataclass(frozen=True)
class Durability:
    """What the server says; None where it would not say."""

    aof: bool | None
    rdb: bool | None
    maxmemory_policy: str | None

    @property
    def no_persistence(self) -> bool:
        return self.aof is False and self.rdb is False

    @property
    def eviction(self) -> bool:
        policy = self.maxmemory_policy or ""
        return policy.startswith(("allkeys-", "volatile-"))

    def risks(self) -> dict[str, bool]:
        """By metric label: True when present."""
        return {"no_persistence": self.no_persistence, "eviction": self.eviction}

    def warnings(self) -> list[str]:
        out = []
        if self.no_persistence:
            out.append("neither AOF nor RDB persistence is on: a Redis restart loses every "
                       "queued and held message (appendonly yes, appendfsync everysec or "
                       "always)")  # fmt: skip
        if self.eviction:
            out.append(f"maxmemory-policy is {self.maxmemory_policy}: under memory pressure "
                       "Redis may delete queue keys (use noeviction)")  # fmt: skip
        return out


@translated
async def read_durability(redis: Redis) -> Durability:
    """One or two round trips; raises QueueError only when Redis is unreachable."""
    config = await _config(redis, "appendonly", "save", "maxmemory-policy")
    if config is None:
        info = await redis.info("persistence")
        policy = (await redis.info("memory")).get("maxmemory_policy")
        # INFO does not show the save schedule: RDB stays unknown.
        aof = _flag(info.get("aof_enabled"))
        return Durability(aof, None, None if policy is None else str(policy))
    appendonly, save, policy = config
    return Durability(
        None if appendonly is None else appendonly == "yes",
        None if save is None else bool(save.strip()),
        policy,
    )


async def _config(redis: Redis, *names: str) -> tuple[str | None, ...] | None:
    try:
        values: dict[str, str] = {}
        for name in names:
            reply = await redis.config_get(name)
            values.update({_text(k or ""): _text(v or "") for k, v in reply.items()})
    except rexc.ResponseError:  # CONFIG renamed or denied (managed Redis, ACL)
        return None
    return tuple(values.get(n) for n in names)


def _flag(value: object) -> bool | None:
    return None if value is None else str(value) in ("1", "yes", "True")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class Memory:
    """``INFO memory``: bytes used, the ``maxmemory`` limit (0: none) and the policy."""

    used_bytes: int
    maxmemory_bytes: int
    maxmemory_policy: str | None

    @property
    def ratio(self) -> float | None:
        """used/maxmemory; None without a limit."""
        if self.maxmemory_bytes <= 0:
            return None
        return self.used_bytes / self.maxmemory_bytes

    @property
    def eviction(self) -> bool:
        return Durability(None, None, self.maxmemory_policy).eviction


@translated
async def read_memory(redis: Redis) -> Memory:
    """One round trip (``INFO memory``); raises QueueError when Redis is unreachable."""
    info = await redis.info("memory")
    policy = info.get("maxmemory_policy")
    return Memory(
        int(info.get("used_memory") or 0),
        int(info.get("maxmemory") or 0),
        None if policy is None else _text(policy),
    )
