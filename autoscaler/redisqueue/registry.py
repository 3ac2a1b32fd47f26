"""The consumer registry: heartbeats and leases, the controller's command, and reading it back.

Per consumer a hash ``keys.consumer_key(id)`` (fields ``keys.ConsumerField``), a lease
``keys.lease_key(id)`` holding the incarnation's random token (``SET … PX``), and
membership of ``keys.consumers_key(queue)``. What is read back is validated by
``parse_consumer``: the hash is written by other processes, so nothing in it is trusted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from redis.asyncio import Redis

from autoscaler import keys
from autoscaler.keys import Command, ConsumerField, ConsumerState
from autoscaler.redisqueue import scripts
from autoscaler.redisqueue.queue import ConsumerKeys
from autoscaler.redisqueue.scripts import translated

T = TypeVar("T")


@dataclass(frozen=True)
class Registration:
    """What a consumer states about itself at every heartbeat."""

    keys: ConsumerKeys
    pod: str
    token: str  # this incarnation's lease value
    max_deliveries: int
    started_at: float  # Unix seconds


@translated
async def heartbeat(
    redis: Redis, reg: Registration, state: ConsumerState, in_flight: int, lease_ms: int
) -> Command | None:
    """Write state and in-flight, renew the lease; return the controller's command.

    One MULTI round trip. ``command`` is never written here: it belongs to the controller.
    """
    cid, queue = reg.keys.consumer_id, reg.keys.queue
    fields: dict[str, str | int | float] = {
        ConsumerField.ID.value: cid,
        ConsumerField.POD.value: reg.pod,
        ConsumerField.QUEUE.value: queue,
        ConsumerField.STATE.value: state.value,
        ConsumerField.IN_FLIGHT.value: in_flight,
        ConsumerField.STARTED_AT.value: reg.started_at,
        ConsumerField.HEARTBEAT_AT.value: round(time.time(), 3),
        ConsumerField.DEAD_LETTER.value: reg.keys.dead,
        ConsumerField.MAX_DELIVERIES.value: reg.max_deliveries,
    }
    async with redis.pipeline(transaction=True) as pipe:
        pipe.hset(keys.consumer_key(cid), mapping=fields)  # type: ignore[arg-type]
        pipe.set(keys.lease_key(cid), reg.token, px=lease_ms)
        pipe.sadd(keys.consumers_key(queue), cid)
        pipe.hget(keys.consumer_key(cid), ConsumerField.COMMAND.value)
        *_, command = await pipe.execute()
    return _enum(Command, command)


@translated
async def release_lease(redis: Redis, consumer_id: str, token: str) -> bool:
    """Drop this incarnation's lease on a clean exit (not a newer incarnation's)."""
    return bool(await scripts.RELEASE(redis, [keys.lease_key(consumer_id)], [token]))


@translated
async def set_command(redis: Redis, consumer_id: str, command: Command) -> bool:
    """Ask a consumer to drain or run; False if it is not registered."""
    reply = await scripts.SET_IF_EXISTS(
        redis, [keys.consumer_key(consumer_id)], [ConsumerField.COMMAND.value, command.value]
    )
    return bool(reply)


@dataclass(frozen=True)
class ConsumerInfo:
    """One registry entry as read back. None: the field is missing or malformed."""

    consumer_id: str
    lease_alive: bool
    state: ConsumerState | None = None
    command: Command | None = None
    in_flight: int | None = None
    pod: str | None = None
    heartbeat_at: float | None = None
    dead_letter: str | None = None
    max_deliveries: int | None = None
    problems: tuple[str, ...] = ()  # one entry per malformed field

    @property
    def valid(self) -> bool:
        return not self.problems and self.state is not None and self.in_flight is not None


@translated
async def read_registry(redis: Redis, queue: str) -> list[ConsumerInfo]:
    """Every consumer registered for ``queue``, sorted by id, in two round trips."""
    ids = sorted(_text(m) for m in await redis.smembers(keys.consumers_key(queue)))
    async with redis.pipeline(transaction=False) as pipe:
        for cid in ids:
            pipe.hgetall(keys.consumer_key(cid))
            pipe.exists(keys.lease_key(cid))
        replies = await pipe.execute()
    return [
        parse_consumer(cid, replies[2 * i], bool(replies[2 * i + 1])) for i, cid in enumerate(ids)
    ]


def parse_consumer(
    consumer_id: str, fields: Mapping[bytes, bytes] | Mapping[str, str], lease_alive: bool
) -> ConsumerInfo:
    """Validate a registry hash: anything malformed becomes None plus a problem, never a raise."""
    raw = {_text(k): _text(v) for k, v in fields.items()}
    problems: list[str] = []

    def field(name: ConsumerField, conv: Callable[[str], T], required: bool = False) -> T | None:
        value = raw.get(name.value)
        if value is None:
            if required:
                problems.append(f"{name.value}: missing")
            return None
        try:
            return conv(value)
        except ValueError:
            problems.append(f"{name.value}: bad value {value[:40]!r}")
            return None

    return ConsumerInfo(
        consumer_id=consumer_id,
        lease_alive=lease_alive,
        state=field(ConsumerField.STATE, ConsumerState, required=True),
        command=field(ConsumerField.COMMAND, Command),
        in_flight=field(ConsumerField.IN_FLIGHT, _count, required=True),
        pod=raw.get(ConsumerField.POD.value),
        heartbeat_at=field(ConsumerField.HEARTBEAT_AT, _finite),
        dead_letter=raw.get(ConsumerField.DEAD_LETTER.value) or None,
        max_deliveries=field(ConsumerField.MAX_DELIVERIES, _count),
        problems=tuple(problems),
    )


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


def _finite(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(text)
    return value


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _enum(kind: type[Command], value: bytes | str | None) -> Command | None:
    try:
        return None if value is None else kind(_text(value))
    except ValueError:
        return None
