"""The /metrics body, served from a worker thread's render, never rendered on the event loop.

``Exposition`` serves the body rendered in a worker thread at most ``max_age_s`` ago: the
documented staleness of the controller's /metrics. What renders it: the controller's
``ControllerMetrics.render`` (its per-workload series cached per block,
``autoscaler.workloadseries``: ~56 ms of CPU at 10,000 workloads after a cycle in which
every queue moved, docs/performance.md), the sidecar's ``generate_latest`` (a small
registry, rendered fresh).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

# A /metrics body: whole, or in parts to be sent one after the other (the controller's:
# its renderer's cached blocks themselves, so the served body is no second copy)
Body = bytes | list[bytes]


class Exposition:
    """The /metrics body, rendered in a worker thread, never on the event loop.

    A body younger than ``max_age_s`` is served as is. An older one: with
    ``serve_stale`` (the controller), it is served at once while one fresh render starts
    in the background, so a scrape never waits for a render and reads values as of the
    previous scrape (at most one scrape interval plus one render old); without (the
    sidecar's small registry), the scrape waits, off the loop, for the fresh render,
    shared by every scrape arriving meanwhile. ``render`` defaults to
    ``generate_latest(registry)``.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        max_age_s: float = 0.0,
        render: Callable[[], Body] | None = None,
        *,
        serve_stale: bool = False,
    ) -> None:
        self.render: Callable[[], Body] = render or (lambda: generate_latest(registry))
        self.max_age_s = max_age_s
        self.serve_stale = serve_stale
        self._body: Body | None = None
        self._rendered_at = -float("inf")
        self._lock = asyncio.Lock()
        self._refresh: asyncio.Task[Body] | None = None

    async def body(self) -> Body:
        loop = asyncio.get_running_loop()
        if self._body is not None and loop.time() - self._rendered_at <= self.max_age_s:
            return self._body
        if self.serve_stale and self._body is not None:
            if self._refresh is None or self._refresh.done():
                self._refresh = asyncio.create_task(self._render())
            return self._body
        return await self._render()

    async def _render(self) -> Body:
        loop = asyncio.get_running_loop()
        async with self._lock:
            if self._body is None or loop.time() - self._rendered_at > self.max_age_s:
                started = loop.time()
                self._body = await asyncio.to_thread(self.render)
                self._rendered_at = started
            return self._body
