"""What the controller's periodic Redis checks share (``durability``, ``memory``).

Each reads the queues' Redis servers a round at a time, when leading starts and then every
``interval_s``: the settings they read change rarely, so not every cycle. A standby reads
nothing (the leader's Events and metrics are the ones that count).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from redis.asyncio import Redis

from autoscaler.aio import MAX_HOLD_S, Pacer
from autoscaler.metrics import ControllerMetrics
from autoscaler.policy import RedisTrigger

from .workload import Workload

LEADER_POLL_S = 1.0  # a standby checks this often whether it leads (the first round's delay)
Record = Callable[[Workload, str, str], None]  # (workload, Event reason, message): a Warning


class ServerWatch:
    """A check of the queues' Redis servers; a subclass says what one round does."""

    def __init__(
        self,
        redis_for: Callable[[str | None], Redis],
        metrics: ControllerMetrics,
        *,
        interval_s: float,
    ) -> None:
        self.redis_for = redis_for
        self.metrics = metrics
        self.interval_s = interval_s

    async def run(
        self,
        workloads: Callable[[], Iterable[Workload]],
        record: Record,
        is_leader: Callable[[], bool],
    ) -> None:
        """A round when leading starts (the first right away), then every ``interval_s``;
        until cancelled."""
        while True:
            if is_leader():
                await self.check(list(workloads()), record)
                await asyncio.sleep(self.interval_s)
            else:
                await asyncio.sleep(LEADER_POLL_S)

    async def check(self, workloads: list[Workload], record: Record) -> None:
        raise NotImplementedError

    @staticmethod
    async def each(members: Iterable[Workload], report: Callable[[Workload], None]) -> None:
        """``report(w)`` for every member, letting the other tasks in every ~MAX_HOLD_S:
        at 10,000 workloads a round's reports (their series, and a warning and an Event per
        workload on a server without maxmemory or persistence) held the event loop
        160-270 ms in one piece at each start and failover (docs/performance.md, goal 4)."""
        pacer = Pacer(MAX_HOLD_S, 50)
        for i, w in enumerate(members):
            report(w)
            await pacer.after(i)


def by_server(
    workloads: Iterable[Workload], triggers: Callable[[Workload], Iterable[RedisTrigger]]
) -> dict[str | None, list[Workload]]:
    """The workloads by the Redis server of their ``triggers`` (None: the default one);
    a workload with several triggers on one server is listed once for it."""
    out: dict[str | None, list[Workload]] = {}
    for w in workloads:
        for url in {t.redis_url for t in triggers(w)}:
            out.setdefault(url, []).append(w)
    return out
