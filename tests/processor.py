"""A stand-in for the user's processor: an aiohttp server that records what it is sent.

In-process (``async with Processor() as p``: tests, the demo) or as its own process
(``python -m tests.processor --port P``: the bench, chaos tests). Each request answers
with the next scripted step (``respond(500, "hang", 200)``) if any, else the default
behaviour: ``status`` after ``latency_s`` (a number, or a (low, high) range drawn per
request), with ``fail_ratio`` of requests answered 500. ``"hang"`` waits until
``release()`` or ``stop()``. Bodies answered 2xx to a client still connected are
``accepted``; every request is in ``received`` with its headers and arrival time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web

Step = int | str  # an HTTP status, or "hang"


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]
    at: float = field(default_factory=time.monotonic)  # arrival; the clock rate limits use


@dataclass
class Processor:
    status: int = 200
    latency_s: float | tuple[float, float] = 0.0
    fail_ratio: float = 0.0
    port: int = 0  # 0: any free port
    seed: int | None = None
    received: list[Received] = field(default_factory=list)
    accepted: list[bytes] = field(default_factory=list)
    in_progress: int = 0

    def __post_init__(self) -> None:
        self._script: deque[Step] = deque()
        self._release = asyncio.Event()
        self._rng = random.Random(self.seed)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/process"

    def respond(self, *steps: Step) -> None:
        """Answer the next requests with these steps, in order, then the default."""
        self._script.extend(steps)

    def release(self) -> None:
        """Let every hanging request finish (with the default behaviour)."""
        self._release.set()

    def accepted_count(self, body: bytes) -> int:
        return sum(1 for b in self.accepted if b == body)

    async def start(self) -> Processor:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/process", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Processor:
        return await self.start()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(Received(body, dict(request.headers)))
        self.in_progress += 1
        try:
            status = await self._answer()
        finally:
            self.in_progress -= 1
        gone = request.transport is None or request.transport.is_closing()
        if 200 <= status < 300 and not gone:  # a 2xx the consumer never saw is no acceptance
            self.accepted.append(body)
        return web.Response(status=status, text="ok" if status < 300 else f"failed {status}")

    async def _answer(self) -> int:
        step = self._script.popleft() if self._script else self.status
        if step == "hang":
            await self._release.wait()
            step = self.status
        latency = self.latency_s
        delay = self._rng.uniform(*latency) if isinstance(latency, tuple) else latency
        if delay > 0:
            await asyncio.sleep(delay)
        if self.fail_ratio and self._rng.random() < self.fail_ratio:
            return 500
        return int(step)


async def _serve_forever(processor: Processor) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with processor:
        print(f"listening {processor.url}", flush=True)
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="A test processor: answers POST /process.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--status", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--fail-ratio", type=float, default=0.0)
    args = parser.parse_args()
    processor = Processor(
        status=args.status, latency_s=args.latency, fail_ratio=args.fail_ratio, port=args.port
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve_forever(processor))


if __name__ == "__main__":
    main()
