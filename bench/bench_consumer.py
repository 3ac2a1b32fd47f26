"""Sidecar throughput with acks against a no-op processor, beside a raw BLMOVE+LREM loop.

Run: ``.venv/bin/python bench/bench_consumer.py [--messages 10000] [--concurrency 1 8 32]``
(from the repository root: the processor is ``python -m tests.processor``).

Starts its own redis-server (from PATH, free loopback port, no persistence) and a no-op
processor (``tests.processor``, answers 200 at once) in another process. For each
concurrency it drains a queue of ``--messages`` messages three ways, in this process:

raw
    C coroutines looping ``BLMOVE queue processing`` then ``LREM``: the floor any
    reliable consumer pays, with no HTTP at all.
http
    C coroutines POSTing to the processor with aiohttp: the HTTP floor, with no Redis.
sidecar
    The real ``Worker`` (``autoscaler consume``) with C slots: take, POST, ack (with the
    next take in the same script), registry heartbeats, metrics.

Per message (p50/p99 ms): raw, BLMOVE sent → LREM answered; http, POST sent → response
read; sidecar, POST sent → ack answered. ``cpu``: this process's CPU µs per message — on
a busy machine the rates swing run to run, CPU cost much less. Each row is the median of
``--repeat`` interleaved runs; sidecar/raw is the median of the paired ratios.
Goal: sidecar ≥ 50% of raw msgs/s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from autoscaler import keys
from autoscaler.consumer import ConsumerMetrics, ConsumerSettings, Worker
from autoscaler.redisqueue import Delivery

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "bench"


@dataclass
class Result:
    rate_per_s: float
    p50_ms: float
    p99_ms: float
    cpu_us: float  # this process's CPU per message: robust to a busy machine, unlike rates


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {port}")


def start(args: list[str], port: int, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(args, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port)
    return process


def summary(elapsed_s: float, cpu_s: float, n: int, samples_s: list[float]) -> Result:
    cuts = statistics.quantiles(samples_s, n=100)
    return Result(n / elapsed_s, cuts[49] * 1000, cuts[98] * 1000, cpu_s / n * 1e6)


def median(results: list[Result]) -> Result:
    return sorted(results, key=lambda r: r.rate_per_s)[len(results) // 2]


async def fill(r: aioredis.Redis, n: int) -> None:
    await r.flushall()
    for lo in range(0, n, 5000):
        await r.lpush(QUEUE, *(f"message-{i:08d}".encode() for i in range(lo, min(n, lo + 5000))))


async def raw_loop(r: aioredis.Redis, n: int, concurrency: int) -> Result:
    await fill(r, n)
    samples: list[float] = []
    processing = keys.processing_key(QUEUE, "raw")

    async def loop() -> None:
        while True:
            started = time.perf_counter()
            message = await r.blmove(QUEUE, processing, 0.05, "RIGHT", "LEFT")  # type: ignore[arg-type]
            if message is None:
                return
            await r.lrem(processing, 1, message)
            samples.append(time.perf_counter() - started)

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started - 0.05  # minus the final idle timeout
    return summary(elapsed, time.process_time() - cpu, n, samples)


async def http_only(url: str, n: int, concurrency: int) -> Result:
    samples: list[float] = []
    left = [n]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:

        async def loop() -> None:
            while left[0] > 0:
                left[0] -= 1
                started = time.perf_counter()
                async with http.post(url, data=b"message-00000000") as response:
                    await response.read()
                samples.append(time.perf_counter() - started)

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(loop() for _ in range(concurrency)))
        return summary(time.perf_counter() - started, time.process_time() - cpu, n, samples)


async def sidecar(r: aioredis.Redis, url: str, n: int, concurrency: int) -> Result:
    await fill(r, n)
    settings = ConsumerSettings(QUEUE, url, "bench-1", concurrency=concurrency)
    metrics = ConsumerMetrics(CollectorRegistry(), QUEUE)
    samples: list[float] = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        worker = Worker(r, http, settings, metrics, rng=random.Random(0))
        done = asyncio.Event()  # set in-process: polling Redis would load it
        _time_handler(worker, samples, lambda: len(samples) >= n and done.set())
        started, cpu = time.perf_counter(), time.process_time()
        task = asyncio.create_task(worker.run())
        await done.wait()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        assert int(await r.get(keys.processed_key(QUEUE)) or 0) == n
        worker.request_stop()
        await task
    return summary(elapsed, cpu, n, samples)


def _time_handler(worker: Worker, samples: list[float], on_ack: Callable[[], object]) -> None:
    """Bench-only instrumentation: per message, from the start of its POST to its ack."""
    handler = worker._handler
    process, ack = handler.process, handler.ack
    started: dict[bytes, float] = {}

    async def timed_process(delivery: Delivery) -> bool:
        started[delivery.message] = time.perf_counter()
        return await process(delivery)

    async def timed_ack(message: bytes, *, take_next: bool) -> Delivery | None:
        following = await ack(message, take_next=take_next)
        samples.append(time.perf_counter() - started.pop(message))
        on_ack()
        return following

    handler.process = timed_process  # type: ignore[method-assign]
    handler.ack = timed_ack  # type: ignore[method-assign]


async def run(redis_url: str, processor_url: str, n: int, levels: list[int], repeat: int) -> None:
    r = aioredis.Redis.from_url(redis_url)
    print(f"{n} messages per run, median of {repeat} interleaved runs; per message: p50/p99 "
          f"ms, this process's CPU µs; load average {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} CPUs")  # fmt: skip
    print(f"{'C':>3} | {'raw msg/s':>9} {'p50':>5} {'p99':>6} {'cpu':>4} | {'http req/s':>10} "
          f"{'p50':>5} {'p99':>6} | {'sidecar msg/s':>13} {'p50':>5} {'p99':>6} {'cpu':>4} | "
          f"{'sidecar/raw':>11}")  # fmt: skip
    try:
        for c in levels:
            rounds = []
            for _ in range(repeat):
                raw = await raw_loop(r, n, c)
                web = await http_only(processor_url, n, c)
                rounds.append((raw, web, await sidecar(r, processor_url, n, c)))
            raw, web, side = (median([row[i] for row in rounds]) for i in range(3))
            ratio = statistics.median(s.rate_per_s / r.rate_per_s for r, _, s in rounds)
            print(f"{c:>3} | {raw.rate_per_s:>9.0f} {raw.p50_ms:>5.2f} {raw.p99_ms:>6.2f} "
                  f"{raw.cpu_us:>4.0f} | {web.rate_per_s:>10.0f} {web.p50_ms:>5.2f} "
                  f"{web.p99_ms:>6.2f} | {side.rate_per_s:>13.0f} {side.p50_ms:>5.2f} "
                  f"{side.p99_ms:>6.2f} {side.cpu_us:>4.0f} | {ratio:>10.0%}",
                  flush=True)  # fmt: skip
    finally:
        await r.aclose()


def with_servers(main: Callable[[str, str], Awaitable[None]]) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not on PATH (make system-deps installs it)")
    redis_port, processor_port = free_port(), free_port()
    redis = start([binary, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no"], redis_port)  # fmt: skip
    processor = start([sys.executable, "-m", "tests.processor", "--port", str(processor_port)],
                      processor_port, cwd=ROOT)  # fmt: skip
    try:
        asyncio.run(main(f"redis://127.0.0.1:{redis_port}/0",
                         f"http://127.0.0.1:{processor_port}/process"))  # fmt: skip
    finally:
        for process in (processor, redis):
            process.terminate()
            process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeat", type=int, default=3, help="runs per row; medians shown")
    args = parser.parse_args()
    with_servers(lambda r, p: run(r, p, args.messages, args.concurrency, args.repeat))


if __name__ == "__main__":
    main()
