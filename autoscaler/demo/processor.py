"""The demo's sample processor: an HTTP endpoint standing in for an LLM call.

``POST /process`` with a demo message (JSON ``{"id", "city", "enqueued_at"}``) waits a
latency drawn from a lognormal distribution given by its median and 95th percentile,
then answers 500 with probability ``failure_rate`` (the sidecar retries it), else 200.
A 200 is recorded in Redis first, so the summary can tell processed, duplicated and
lost messages apart:

- ``<record>`` (hash): message id → times processed (HINCRBY: 2 means a duplicate);
- ``<record>:waits`` (hash): message id → seconds from enqueue to the start of its last
  successful processing.

Run alone: ``python -m autoscaler.demo.processor --port 8080``; ``--port 0`` picks a free
port. The first line on stdout is ``listening on HOST:PORT``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import signal
import time
from dataclasses import dataclass, field

from aiohttp import web
from redis.asyncio import Redis

from autoscaler.argtypes import fraction, positive_float
from autoscaler.redisconn import make_client

RECORD_KEY = "demo:processed"
P95_Z = 1.6448536269514722  # the standard normal's 95th percentile
MAX_LATENCY_FACTOR = 20.0  # cap a draw at this many medians: no minute-long tail


@dataclass(frozen=True)
class Latency:
    """A lognormal latency in seconds, from its median and 95th percentile."""

    median_s: float
    p95_s: float

    def draw(self, rng: random.Random) -> float:
        sigma = math.log(self.p95_s / self.median_s) / P95_Z if self.p95_s > self.median_s else 0
        return min(
            rng.lognormvariate(math.log(self.median_s), sigma), self.median_s * MAX_LATENCY_FACTOR
        )


@dataclass
class Processor:
    latency: Latency
    failure_rate: float
    redis: Redis | None = None
    record_key: str = RECORD_KEY
    rng: random.Random = field(default_factory=random.Random)

    async def handle(self, request: web.Request) -> web.Response:
        started = time.time()
        try:
            message = json.loads(await request.read())
            message_id = str(message["id"])
            enqueued_at = float(message["enqueued_at"])
        except (ValueError, KeyError, TypeError):
            return web.Response(status=400, text="expected JSON with id and enqueued_at\n")
        await asyncio.sleep(self.latency.draw(self.rng))
        if self.rng.random() < self.failure_rate:
            return web.Response(status=500, text="simulated failure\n")
        if self.redis is not None:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hincrby(self.record_key, message_id, 1)
                pipe.hset(f"{self.record_key}:waits", message_id, round(started - enqueued_at, 4))
                await pipe.execute()
        return web.Response(text=f"summarised {message.get('city', '?')}\n")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/process", self.handle)
        return app


async def serve(processor: Processor, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start listening; returns the runner (``cleanup()`` to stop) and the bound port."""
    runner = web.AppRunner(processor.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner, int(runner.addresses[0][1])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The processor's flags, shared with the replica launcher and the demo."""
    parser.add_argument("--latency-median-ms", type=positive_float, default=200.0,
                        help="median processing latency (default 200)")  # fmt: skip
    parser.add_argument("--latency-p95-ms", type=positive_float, default=500.0,
                        help="95th percentile latency, lognormal (default 500)")  # fmt: skip
    parser.add_argument("--failure-rate", type=fraction, default=0.02,
                        help="share of requests answered 500, 0 to <1 (default 0.02)")  # fmt: skip


def processor_from_args(args: argparse.Namespace, redis: Redis | None) -> Processor:
    latency = Latency(args.latency_median_ms / 1000, args.latency_p95_ms / 1000)
    return Processor(latency, args.failure_rate, redis, args.record, random.Random())


async def _main(args: argparse.Namespace) -> int:
    redis = make_client(args.redis_url) if args.redis_url else None
    runner, port = await serve(processor_from_args(args, redis), args.host, args.port)
    print(f"listening on {args.host}:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        if redis is not None:
            await redis.aclose()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m autoscaler.demo.processor")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080, help="0: a free port")
    parser.add_argument("--redis-url", help="record successes here (default: don't)")
    parser.add_argument("--record", default=RECORD_KEY, help=f"default {RECORD_KEY}")
    add_arguments(parser)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(_main(parser.parse_args()))
    return 130


if __name__ == "__main__":
    raise SystemExit(main())
