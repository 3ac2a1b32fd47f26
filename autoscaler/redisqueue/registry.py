"""The consumer registry: heartbeats and leases, the controller's command, and reading it back.

Per consumer a hash ``keys.consumer_key(id)`` (fields ``keys.ConsumerField``), a lease
``keys.lease_key(id)`` holding the incarnation's random token (``SET … PX``), and
membership of ``keys.consumers_key(queue)``. What is read back is validated by
``parse_consumer``: the hash is written by other processes, so nothing in it is trusted.

Scale-in protection is a key of its own, ``keys.protection_key(id)``, set with a TTL
(``protect``): Redis removes it at its expiry, so protection ends by itself even if the
pod that asked for it is gone, and no clock but the server's is involved.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
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
        pipe.hset(keys.consumer_key(cid, queue), mapping=fields)  # type: ignore[arg-type]
        pipe.set(keys.lease_key(cid, queue), reg.token, px=lease_ms)
        pipe.sadd(keys.consumers_key(queue), cid)
        pipe.hget(keys.consumer_key(cid, queue), ConsumerField.COMMAND.value)
        *_, command = await pipe.execute()
    return _enum(Command, command)


@translated
async def release_lease(redis: Redis, consumer_id: str, token: str, queue: str = "") -> bool:
    """Drop this incarnation's lease on a clean exit (not a newer incarnation's)."""
    return bool(await scripts.RELEASE(redis, [keys.lease_key(consumer_id, queue)], [token]))


@translated
async def set_command(redis: Redis, consumer_id: str, command: Command, queue: str = "") -> bool:
    """Ask a consumer of ``queue`` to drain or run; False if it is not registered."""
    reply = await scripts.SET_IF_EXISTS(
        redis,
        [keys.consumer_key(consumer_id, queue)],
        [ConsumerField.COMMAND.value, command.value],
    )
    return bool(reply)


# The longest scale-in protection one request may ask for (48 h, as ECS's task protection).
MAX_PROTECTION_S = 172_800


@translated
async def protect(redis: Redis, consumer_id: str, seconds: float, queue: str = "") -> int:
    """Protect this consumer's replica from scale-in for ``seconds`` (0: end protection);
    returns the protection's remaining milliseconds. Replaces any earlier protection."""
    key = keys.protection_key(consumer_id, queue)
    ms = round(seconds * 1000)
    if ms <= 0:
        await redis.delete(key)
        return 0
    await redis.set(key, "1", px=min(ms, MAX_PROTECTION_S * 1000))
    return min(ms, MAX_PROTECTION_S * 1000)


@translated
async def protection_ms(redis: Redis, consumer_id: str, queue: str = "") -> int:
    """Milliseconds of protection left; 0 when not protected."""
    return max(0, int(await redis.pttl(keys.protection_key(consumer_id, queue))))


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
    protected_ms: int = 0  # scale-in protection left (``protect``); 0: none
    queue: str = ""  # the queue it was read for (its keys live in that queue's slot)

    @property
    def valid(self) -> bool:
        return not self.problems and self.state is not None and self.in_flight is not None


@translated
async def read_registry(redis: Redis, queue: str) -> list[ConsumerInfo]:
    """Every consumer registered for ``queue``, sorted by id, in two round trips."""
    ids = sorted(_text(m) for m in await redis.smembers(keys.consumers_key(queue)))
    async with redis.pipeline(transaction=False) as pipe:
        for cid in ids:
            pipe.hgetall(keys.consumer_key(cid, queue))
            pipe.exists(keys.lease_key(cid, queue))
            pipe.pttl(keys.protection_key(cid, queue))
        replies = await pipe.execute()
    return [
        replace(
            parse_consumer(cid, replies[3 * i], bool(replies[3 * i + 1])),
            protected_ms=max(0, int(replies[3 * i + 2])),  # PTTL: -2 no key, -1 no TTL
            queue=queue,
        )
        for i, cid in enumerate(ids)
    ]


# Queues per call of DEAD_CONSUMERS: a script blocks the server while it runs; the calls
# of one pass still go in one pipeline (one round trip), other clients run between them.
REAP_CHUNK_QUEUES = 1000
_CONSUMERS = keys.consumers_key("\x00").partition("\x00")[::2]
_LEASE_BASE, _HASH_BASE = keys.lease_key(""), keys.consumer_key("")
# The script builds names as prefix + queue + suffix and base + slot + id: fail loudly
# at import if ``keys`` ever changes shape.
for _q in ("q", "jobs:{orders}"):
    _slot = f"{{{keys.hash_tag(_q)}}}:" if keys.hash_tag(_q) else ""
    assert keys.consumers_key(_q) == _CONSUMERS[0] + _q + _CONSUMERS[1]
    assert keys.lease_key("c", _q) == _LEASE_BASE + _slot + "c"
    assert keys.consumer_key("c", _q) == _HASH_BASE + _slot + "c"


@translated
async def dead_consumers(redis: Redis, queues: Sequence[str]) -> list[ConsumerInfo]:
    """Every registered consumer of ``queues`` whose lease expired, in one round trip.

    The reaper's read: one script per ``REAP_CHUNK_QUEUES`` queues, all pipelined; only the
    dead come back, so a pass over a healthy fleet parses an empty reply.
    """
    calls = _chunked(queues, [*_CONSUMERS, _LEASE_BASE, _HASH_BASE])
    found: list[ConsumerInfo] = []
    for reply in await scripts.DEAD_CONSUMERS.many(redis, calls):
        if isinstance(reply, Exception):
            raise reply
        for i in range(0, len(reply), 3):
            queue, cid, flat = _text(reply[i]), _text(reply[i + 1]), reply[i + 2]
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            found.append(replace(parse_consumer(cid, fields, False), queue=queue))
    return found


@translated
async def told_to_drain(redis: Redis, queues: Sequence[str]) -> list[tuple[str, str]]:
    """(queue, consumer id) of every registered consumer of ``queues`` whose command is
    ``drain``, in one round trip: one script per ``REAP_CHUNK_QUEUES`` queues, pipelined.

    A new leader's check for drains a dead leader left unfinished: over a fleet with none
    the reply is empty, where a registry read per queue took 20,000 round trips at 10,000
    queues and exhausted the connection pool ahead of the first scale writes."""
    head = [*_CONSUMERS, _HASH_BASE, ConsumerField.COMMAND.value, Command.DRAIN.value]
    found: list[tuple[str, str]] = []
    for reply in await scripts.TOLD_TO_DRAIN.many(redis, _chunked(queues, head)):
        if isinstance(reply, Exception):
            raise reply
        found.extend((_text(reply[i]), _text(reply[i + 1])) for i in range(0, len(reply), 2))
    return found


def _chunked(queues: Sequence[str], head: list[str]) -> list[list[str]]:
    """The arguments of one registry script call per ``REAP_CHUNK_QUEUES`` queues: ``head``,
    then the names joined by newlines, then each name that cannot be joined so."""
    calls = []
    for start in range(0, len(queues), REAP_CHUNK_QUEUES):
        part = queues[start : start + REAP_CHUNK_QUEUES]
        plain = [q for q in part if q and "\n" not in q]
        odd = [q for q in part if not q or "\n" in q]
        calls.append([*head, "\n".join(plain), *odd])
    return calls


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
