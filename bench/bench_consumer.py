"""Sidecar throughput against a no-op processor, beside a minimal hand-written forwarder.

Run: ``.venv/bin/python bench/bench_consumer.py [--messages 10000] [--concurrency 1 8 32]``
(from the repository root: the processor is ``python -m tests.processor``).

Starts its own redis-server (from PATH, free loopback port, no persistence) and a no-op
processor (``tests.processor``, answers 200 at once) in another process. For each
concurrency it drains a queue of ``--messages`` messages three ways, in this process:

floor
    The minimal correct forwarder, written by hand: C coroutines, each POSTs its message
    with aiohttp, then runs the sidecar's own ``ACK_TAKE`` script once (ack this one, take
    the next, count the delivery, journal the reply under a fresh token for its slot) by
    ``EVALSHA`` with precomputed keys. The same Redis work per message as a correct
    consumer, with nothing else: no retries, breaker, ledger, metrics, logs.
bare
    The same with the journal off (token ``''``): what writing the journal costs.
sidecar
    The real ``Worker`` (``autoscaler consume``) with C slots: take, POST, ack-and-take,
    registry heartbeats, ledger, breaker, metrics.

Per row: msg/s, and this process's CPU µs per message (the sidecar's process CPU: robust
to a busy machine, unlike rates). Each figure is the median of ``--repeat`` interleaved
runs (every other round in reverse order) with min–max; sidecar/floor is the median of
the paired ratios, of msg/s and of CPU per message (floor CPU / sidecar CPU: the steadier
one on a loaded machine).
Goal: sidecar ≥ 90% of the floor at every concurrency, no drop from 8 to 32.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
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
from autoscaler.consumer.service import connect
from autoscaler.redisqueue import ConsumerKeys, Delivery
from autoscaler.redisqueue.scripts import ACK_TAKE

ROOT = Path(__file__).resolve().parent.parent
QUEUE = "bench"


@dataclass
class Result:
    rate_per_s: float
    cpu_us: float  # this process's CPU per message


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


async def fill(r: aioredis.Redis, n: int) -> None:
    await r.flushall()
    for lo in range(0, n, 5000):
        await r.lpush(QUEUE, *(f"message-{i:08d}".encode() for i in range(lo, min(n, lo + 5000))))


async def forwarder(r: aioredis.Redis, url: str, n: int, concurrency: int, journal: bool) -> Result:
    """The floor: POST, then one ``ACK_TAKE`` (ack + take next + journal) per message."""
    await fill(r, n)
    ck = ConsumerKeys(QUEUE, "floor")
    script_keys = ck.taking()
    seq = [0]
    headers = {"X-Queue": QUEUE, "X-Consumer-Id": "floor",
               "Content-Type": "application/octet-stream"}  # fmt: skip

    async def ack_take(slot: str, message: bytes | None) -> bytes | None:
        seq[0] += 1
        token = f"t-{seq[0]}" if journal else ""
        reply = await r.evalsha(ACK_TAKE.sha, len(script_keys), *script_keys, token, slot,
                                "0" if message is None else "1", message or b"", "1")  # fmt: skip
        return reply[2] if len(reply) == 5 else None

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:

        async def loop(slot: str) -> None:
            message = await ack_take(slot, None)
            while message is not None:
                async with http.post(url, data=message, headers=headers) as response:
                    await response.read()
                    assert response.status == 200
                message = await ack_take(slot, message)

        await r.script_load(ACK_TAKE.source)
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(loop(str(i)) for i in range(concurrency)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert int(await r.get(keys.processed_key(QUEUE)) or 0) == n
    return Result(n / elapsed, cpu / n * 1e6)


async def sidecar(r: aioredis.Redis, redis_url: str, url: str, n: int, concurrency: int) -> Result:
    """The real worker on the client ``autoscaler consume`` builds (``service.connect``)."""
    await fill(r, n)
    own = connect(redis_url, concurrency)
    settings = ConsumerSettings(QUEUE, url, "bench-1", concurrency=concurrency)
    metrics = ConsumerMetrics(CollectorRegistry(), QUEUE)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        worker = Worker(own, http, settings, metrics, rng=random.Random(0))
        done = asyncio.Event()  # set in-process: polling Redis would load it
        _count_acks(worker, n, done)
        started, cpu = time.perf_counter(), time.process_time()
        task = asyncio.create_task(worker.run())
        await done.wait()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        assert int(await r.get(keys.processed_key(QUEUE)) or 0) == n
        worker.request_stop()
        await task
    await own.aclose()
    return Result(n / elapsed, cpu / n * 1e6)


def _count_acks(worker: Worker, n: int, done: asyncio.Event) -> None:
    """Bench-only instrumentation: set ``done`` at the n-th ack (one call per message)."""
    handler = worker._handler
    ack = handler.ack
    acked = [0]

    async def counted_ack(message: bytes, **kwargs: object) -> Delivery | None:
        following = await ack(message, **kwargs)  # type: ignore[arg-type]
        acked[0] += 1
        if acked[0] >= n:
            done.set()
        return following

    handler.ack = counted_ack  # type: ignore[method-assign]


NAMES = ("floor", "bare", "sidecar")


async def one(r: aioredis.Redis, redis_url: str, url: str, n: int, c: int, name: str) -> Result:
    if name == "sidecar":
        return await sidecar(r, redis_url, url, n, c)
    return await forwarder(r, url, n, c, journal=name == "floor")


def spread(values: list[float], fmt: str) -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}–{max(values):{fmt}})"


async def run(redis_url: str, processor_url: str, n: int, levels: list[int], repeat: int) -> None:
    # Like the sidecar's client: no socket timeout (redis-py's default of 5 s costs a
    # wait_for task per command).
    r = aioredis.Redis.from_url(redis_url, socket_timeout=None)
    print(f"{n} messages per run, median (min–max) of {repeat} interleaved runs; cpu: this "
          f"process's CPU µs per message; load average {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} CPUs", flush=True)  # fmt: skip
    try:
        for c in levels:
            rounds = []
            for i in range(repeat):
                # Every other round in reverse: the processor keeps every request it gets
                # and the machine's load drifts, so a fixed order would always give one of
                # the three the later state.
                order = NAMES if i % 2 == 0 else NAMES[::-1]
                got = {name: await one(r, redis_url, processor_url, n, c, name) for name in order}
                rounds.append((got["floor"], got["bare"], got["sidecar"]))
            cols = []
            for i, name in enumerate(("floor", "bare (no journal)", "sidecar")):
                rates = [row[i].rate_per_s for row in rounds]
                cpus = [row[i].cpu_us for row in rounds]
                cols.append(f"{name} {spread(rates, ',.0f')} msg/s, cpu {spread(cpus, '.0f')} µs")
            ratios = [s.rate_per_s / f.rate_per_s * 100 for f, _, s in rounds]
            # On a busy machine the rates swing run to run; all three are CPU-bound here,
            # so the CPU ratio is the steadier estimate of the same figure.
            cpu_ratios = [f.cpu_us / s.cpu_us * 100 for f, _, s in rounds]
            print(f"c={c:<3} " + " | ".join(cols)
                  + f" | sidecar/floor msg/s {spread(ratios, '.0f')}%, "
                  f"by CPU {spread(cpu_ratios, '.0f')}%", flush=True)  # fmt: skip
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
    # As in production: INFO lines formatted and written (nowhere), no per-message lines.
    logging.basicConfig(level=logging.INFO, stream=open(os.devnull, "w"))  # noqa: SIM115
    with_servers(lambda r, p: run(r, p, args.messages, args.concurrency, args.repeat))


if __name__ == "__main__":
    main()
