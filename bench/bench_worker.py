"""In-process worker (``autoscaler.worker``) throughput with acks, beside a raw BLMOVE+LREM loop.

Run: ``.venv/bin/python bench/bench_worker.py [--messages 10000] [--concurrency 1 8]``

Starts its own redis-server (from PATH, free loopback port, no persistence). For each
concurrency C it drains a queue of ``--messages`` messages two ways, in this process:

raw
    C coroutines looping ``BLMOVE queue processing`` then ``LREM``: the floor any
    reliable consumer pays (``bench_consumer.raw_loop``).
worker
    ``async with Worker(...) as w: async for m in w: ... await m.ack()`` — with C > 1 each
    message acked in a task of its own. Take and ack are the sidecar's scripts (journal,
    quarantine rule), plus registry heartbeats. The processing is empty: this is the cost
    of the protocol, not of any work.

Per message (p50/p99 ms): yielded → ack answered for the worker, BLMOVE sent → LREM
answered for raw; ``cpu``: this process's CPU µs per message. Each row is the median of
``--repeat`` interleaved runs; worker/raw is the median of the paired ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import time

import redis.asyncio as aioredis
from bench_consumer import QUEUE, Result, fill, free_port, median, raw_loop, start, summary

from autoscaler import keys
from autoscaler.worker import Message, Worker


async def worker_loop(r: aioredis.Redis, url: str, n: int, concurrency: int) -> Result:
    await fill(r, n)
    samples: list[float] = []
    tasks: set[asyncio.Task[None]] = set()

    async def ack(message: Message, yielded: float) -> None:
        await message.ack()
        samples.append(time.perf_counter() - yielded)

    async with Worker(url, QUEUE, consumer_id="bench-w", concurrency=concurrency,
                      handle_signals=False) as worker:  # fmt: skip
        started, cpu = time.perf_counter(), time.process_time()  # registered: now the work
        async for message in worker:
            yielded = time.perf_counter()
            if concurrency == 1:
                await ack(message, yielded)
            else:
                task = asyncio.create_task(ack(message, yielded))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            if len(samples) + len(tasks) >= n:
                break
        await asyncio.gather(*tasks)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert int(await r.get(keys.processed_key(QUEUE)) or 0) == n
    return summary(elapsed, cpu, n, samples)


async def run(redis_url: str, n: int, levels: list[int], repeat: int) -> None:
    r = aioredis.Redis.from_url(redis_url)
    print(f"{n} messages per run, median of {repeat} interleaved runs; per message: p50/p99 "
          f"ms, this process's CPU µs; load average {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    print(f"{'C':>3} | {'raw msg/s':>9} {'p50':>5} {'p99':>6} {'cpu':>4} | {'worker msg/s':>12} "
          f"{'p50':>5} {'p99':>6} {'cpu':>4} | {'worker/raw':>10}")  # fmt: skip
    try:
        for c in levels:
            rounds = [(await raw_loop(r, n, c), await worker_loop(r, redis_url, n, c))
                      for _ in range(repeat)]  # fmt: skip
            raw, work = median([a for a, _ in rounds]), median([b for _, b in rounds])
            ratio = statistics.median(b.rate_per_s / a.rate_per_s for a, b in rounds)
            print(f"{c:>3} | {raw.rate_per_s:>9.0f} {raw.p50_ms:>5.2f} {raw.p99_ms:>6.2f} "
                  f"{raw.cpu_us:>4.0f} | {work.rate_per_s:>12.0f} {work.p50_ms:>5.2f} "
                  f"{work.p99_ms:>6.2f} {work.cpu_us:>4.0f} | {ratio:>9.0%}",
                  flush=True)  # fmt: skip
    finally:
        await r.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; medians shown")
    args = parser.parse_args()
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not on PATH (make system-deps installs it)")
    port = free_port()
    redis = start([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no"], port)  # fmt: skip
    try:
        asyncio.run(run(f"redis://127.0.0.1:{port}/0", args.messages, args.concurrency,
                        args.repeat))  # fmt: skip
    finally:
        redis.terminate()
        redis.wait(10)


if __name__ == "__main__":
    main()
