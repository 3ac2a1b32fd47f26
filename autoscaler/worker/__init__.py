"""The in-process worker API, for workers that take messages from Redis themselves.

    from autoscaler.worker import Worker

    async with Worker("redis://127.0.0.1:6379/0", "jobs") as worker:
        async for message in worker:
            await handle(message.body)
            await message.ack()

It speaks the sidecar's protocol (``autoscaler.consumer``): the same registry,
heartbeat and lease, the controller's drain, the reaper after a crash, dead-lettering
after ``max_deliveries`` and scale-in protection (``Worker.protect``), so a worker
written this way is drained before its pod is removed and loses no message.
Modules: ``worker`` (the ``Worker``), ``message`` (a ``Message`` and how it is settled).
User guide: ``docs/worker.md``.
"""

from __future__ import annotations

from autoscaler.worker.message import Message
from autoscaler.worker.worker import Worker

__all__ = ["Message", "Worker"]
