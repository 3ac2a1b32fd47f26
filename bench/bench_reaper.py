"""Cost of one reaper pass over 10,000 queues with one or two live consumers each.

Runs the real ``Reaper`` against a private redis-server, beside two references measured
in the same run: the old way (``read_registry`` per queue: two round trips each), and the
floor, the controller's single Lua read of the same queues (``RedisSource``, one
pipelined round trip). Prints client CPU ms per pass, median (min-max) of 5 passes, and
the ratio to the floor. Usage: ``.venv/bin/python bench/bench_reaper.py [--queues N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).parent.parent))
sys.path.insert(0, str(Path(__file__).parent))

from bench_cycle import lua_read_floor, start_redis

from autoscaler import keys, redisqueue
from autoscaler.drain import Reaper
from autoscaler.metrics import ControllerMetrics

PASSES = 5


async def setup(client: aioredis.Redis, n: int) -> None:
    await client.flushall()
    async with client.pipeline(transaction=False) as pipe:
        for i in range(n):
            for c in range(1 + i % 2):  # one or two consumers, every lease alive
                cid = f"c{i}-{c}"
                pipe.hset(keys.consumer_key(cid), mapping={"state": "running", "in_flight": 0})
                pipe.set(keys.lease_key(cid), "t", px=600_000)
                pipe.sadd(keys.consumers_key(f"q{i}"), cid)
        await pipe.execute()


async def cpu_ms(action: Callable[[], Awaitable[object]], passes: int) -> list[float]:
    out = []
    for _ in range(passes):
        c0 = time.process_time()
        await action()
        out.append(1000 * (time.process_time() - c0))
    return out


def fmt(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} ({min(values):.1f}-{max(values):.1f})"


async def main(url: str, n: int) -> None:
    client = aioredis.Redis.from_url(url)
    for _ in range(100):
        try:
            await client.ping()
            break
        except Exception:
            await asyncio.sleep(0.05)
    await setup(client, n)
    queues = [f"q{i}" for i in range(n)]
    reaper = Reaper(lambda _: client, ControllerMetrics(CollectorRegistry()))
    await reaper.reap(None, queues)  # warm up: load the scripts

    async def floor() -> None:
        await lua_read_floor(client, queues)

    rows = [
        ("reaper (one round trip)", await cpu_ms(lambda: reaper.reap(None, queues), PASSES)),
        ("floor: cycle's Lua read", await cpu_ms(floor, PASSES)),
    ]

    async def per_queue() -> None:
        for q in queues:
            await redisqueue.read_registry(client, q)

    rows.append(("before: registry per queue", await cpu_ms(per_queue, 1)))
    base = statistics.median(rows[1][1])
    print(f"{n} queues, 1-2 live consumers each; client CPU ms per pass, median (min-max)")
    for name, values in rows:
        print(f"{name:<28} | {fmt(values):>22} | {statistics.median(values) / base:6.1f}x floor")
    await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queues", type=int, default=10_000)
    args = parser.parse_args()
    server, redis_url = start_redis()
    try:
        asyncio.run(main(redis_url, args.queues))
    finally:
        server.terminate()
        server.wait()
