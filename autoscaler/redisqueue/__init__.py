"""Reliable-queue and registry operations in Redis, shared by the sidecar and the reaper.

A package rather than one module only to keep each file small: ``queue`` (messages),
``registry`` (heartbeats, commands, reading back), ``scripts`` (the Lua), ``durability``
(can this server lose messages?). Import from here.

Each operation that touches more than one key is one Lua script, so that Redis runs it
atomically: a message is in exactly one of the queue, one processing list or the
dead-letter list, and two reapers (two controllers) racing on the same dead consumer
requeue each message once. Terms are those of ``autoscaler.keys``; in short:

delivery
    One hand-over of a message to a processor. ``take`` and ``redeliver`` count it in
    the deliveries hash (key: the message's SHA-1, computed by Redis ``sha1hex``, equal
    to ``keys.message_digest``); ``ack`` and dead-lettering forget it.
push back
    Return a held message to the head of the queue (the right end, taken next) without
    judging it: used by a drain. *Requeue* returns a whole processing list and may
    dead-letter messages that reached ``max_deliveries``: used after a crash.

Clients must be created with ``decode_responses=False``: messages are bytes. Every
``redis.exceptions.RedisError`` leaves as ``QueueError`` (``TransientQueueError`` when
a retry may help), raised ``from`` the original.
"""

from __future__ import annotations

from autoscaler.redisqueue.durability import Durability, Memory, read_durability, read_memory
from autoscaler.redisqueue.queue import (
    ConsumerKeys,
    Delivery,
    Requeued,
    Step,
    Verdict,
    ack,
    dead_letter,
    fail,
    held,
    held_count,
    push_back,
    redeliver,
    requeue,
    take,
    take_now,
)
from autoscaler.redisqueue.registry import (
    MAX_PROTECTION_S,
    ConsumerInfo,
    Registration,
    dead_consumers,
    heartbeat,
    parse_consumer,
    protect,
    protection_ms,
    read_registry,
    release_lease,
    set_command,
    told_to_drain,
)

__all__ = [
    "MAX_PROTECTION_S",
    "ConsumerInfo",
    "ConsumerKeys",
    "Delivery",
    "Durability",
    "Memory",
    "Registration",
    "Requeued",
    "Step",
    "Verdict",
    "ack",
    "dead_consumers",
    "dead_letter",
    "fail",
    "heartbeat",
    "held",
    "held_count",
    "parse_consumer",
    "protect",
    "protection_ms",
    "push_back",
    "read_durability",
    "read_memory",
    "read_registry",
    "redeliver",
    "release_lease",
    "requeue",
    "set_command",
    "take",
    "take_now",
    "told_to_drain",
]
