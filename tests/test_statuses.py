"""Status writes are coalesced per workload and written one at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from autoscaler.controller.statuses import StatusWriter
from autoscaler.workload import WorkloadRef


@dataclass
class SlowTarget:
    """Records each status; a write blocks until ``gate`` opens."""

    writes: list[tuple[str, object]]
    name: str
    gate: asyncio.Event
    in_flight: list[int] = field(default_factory=lambda: [0, 0])  # now, most ever

    async def write_status(self, status: Mapping[str, object]) -> None:
        self.in_flight[0] += 1
        self.in_flight[1] = max(self.in_flight)
        await self.gate.wait()
        self.writes.append((self.name, status["n"]))
        self.in_flight[0] -= 1


async def test_latest_status_per_workload_one_write_at_a_time() -> None:
    tasks: list[asyncio.Task[None]] = []

    def spawn(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        tasks.append(asyncio.create_task(coro))
        return tasks[-1]

    writes: list[tuple[str, object]] = []
    gate = asyncio.Event()
    shared = [0, 0]
    a = SlowTarget(writes, "a", gate, shared)
    b = SlowTarget(writes, "b", gate, shared)
    writer = StatusWriter(spawn)
    writer.submit(WorkloadRef("ns", "a"), a, lambda: {"n": 1})
    await asyncio.sleep(0)  # a's first write is in flight
    for n in (2, 3):
        writer.submit(WorkloadRef("ns", "a"), a, lambda n=n: {"n": n})
    writer.submit(WorkloadRef("ns", "b"), b, lambda: {"n": 1})
    writer.submit(WorkloadRef("ns", "gone"), b, lambda: {"n": 9})
    writer.forget(WorkloadRef("ns", "gone"))
    assert writer.pending == 2
    gate.set()
    await asyncio.gather(*tasks)
    assert writes == [("a", 1), ("a", 3), ("b", 1)]  # 2 replaced unwritten by 3
    assert shared[1] == 1  # never two status writes at once
    assert writer.pending == 0
