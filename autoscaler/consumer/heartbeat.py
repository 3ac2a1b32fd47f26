"""The heartbeat: renew the lease, publish state and in-flight, read the controller's command.

One MULTI round trip per ``heartbeat_interval_s`` (``redisqueue.heartbeat``), and one more
at once whenever the state changes (``poke``), so the controller sees ``draining`` and
``drained`` without waiting an interval. Redis failures are logged once per run of
failures and never stop the consumer: if they outlast the lease, a reaper returns the
messages held here to the queue, and their acks here then find them gone (at-least-once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from redis.asyncio import Redis

from autoscaler import redisqueue
from autoscaler.errors import QueueError
from autoscaler.keys import Command, ConsumerState


class Heartbeat:
    """The registry writer of one consumer; the only code that writes its hash."""

    def __init__(
        self,
        redis: Redis,
        registration: redisqueue.Registration,
        interval_s: float,
        lease_ms: int,
        *,
        status: Callable[[], tuple[ConsumerState, int]],
        on_command: Callable[[Command], None],
        log: logging.LoggerAdapter[logging.Logger],
    ) -> None:
        self._redis = redis
        self._registration = registration
        self._interval_s = interval_s
        self._lease_ms = lease_ms
        self._status = status
        self._on_command = on_command
        self._log = log
        self._now = asyncio.Event()

    def poke(self) -> None:
        """Publish at once (the state changed)."""
        self._now.set()

    async def beat(self) -> None:
        """One heartbeat; hands the command read back to ``on_command``. Raises QueueError."""
        state, in_flight = self._status()
        reg, lease_ms = self._registration, self._lease_ms
        command = await redisqueue.heartbeat(self._redis, reg, state, in_flight, lease_ms)
        if command is not None:
            self._on_command(command)

    async def run(self) -> None:
        """Beat until cancelled."""
        failing = False
        while True:
            self._now.clear()
            try:
                await self.beat()
            except QueueError as e:
                if not failing:
                    self._log.warning("heartbeat failed; the lease expires if this lasts: %s", e)
                failing = True
            else:
                if failing:
                    self._log.info("heartbeat recovered")
                failing = False
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval_s):
                    await self._now.wait()

    async def release(self) -> None:
        """Drop the lease on exit, so the registry shows this consumer gone at once."""
        reg = self._registration
        await redisqueue.release_lease(self._redis, reg.keys.consumer_id, reg.token, reg.keys.queue)
