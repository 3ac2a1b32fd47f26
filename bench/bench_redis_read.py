"""Cost of one Redis read cycle at 1 … 10,000 workloads: Lua script vs pipeline vs naive loop.

Run: ``.venv/bin/python bench/bench_redis_read.py [--sizes 1 100 1000 10000] [--cycles 5]``

Starts its own redis-server (from PATH, free loopback port, no persistence) and creates N
queues, one workload each, every queue with a backlog, two registered consumers holding
messages in their processing lists (one of them alive: its lease key exists), and a
processed counter. Per cycle it reports:

round trips
    requests the client sent (counted in the connection: a pipeline is one).
client CPU ms
    ``time.process_time`` of the whole ``read`` (packing, parsing, building readings):
    the controller's cost. The goal is ≤ 50 ms at 10,000 workloads.
wall ms
    end to end, loopback.
server CPU ms
    redis-server's CPU (``INFO cpu`` user+sys): what the cycle costs everyone else on it.
longest command ms
    the server time of one call of the costliest command (``INFO commandstats``): a
    script blocks every other client for its whole run, so this is the stall the read
    inflicts on the sidecars' takes and acks (the script is split in ``CHUNK_QUEUES``).

Paths: ``lua`` and ``pipeline`` are ``RedisSource`` (the pipeline needs a second round trip
for the processing lists); ``naive`` awaits one ``LLEN`` and one ``GET`` per workload in
turn, without in-flight (what a per-trigger scaler does), as the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.utils import HIREDIS_AVAILABLE

from autoscaler import keys
from autoscaler.policy.spec import RedisTrigger
from autoscaler.redisconn import RedisCredentials, make_client
from autoscaler.sources.redis import RedisSource


class CountingConnection(Connection):
    """Counts requests sent; a whole pipeline goes out in one ``send_packed_command``."""

    sent = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        await super().send_packed_command(command, check_health)


def start_redis() -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not on PATH (apt-get install redis-server)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            redis.Redis(port=port).ping()
            return process, port
        except redis.ConnectionError:
            time.sleep(0.02)
    process.kill()
    sys.exit("redis-server did not start")


def populate(port: int, n: int) -> list[RedisTrigger]:
    """N queues, each with a backlog, two consumers with processing lists (one with a
    lease), a counter."""
    client = redis.Redis(port=port)
    client.flushall()
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        queue = f"bench:q{i}"
        pipe.rpush(queue, *[b"m"] * (1 + i % 7))
        for c in ("a", "b"):
            pipe.sadd(keys.consumers_key(queue), f"w{i}{c}")
            pipe.rpush(keys.processing_key(queue, f"w{i}{c}"), b"x")
        pipe.set(keys.lease_key(f"w{i}a"), b"1")  # w{i}b registered, no lease: not alive
        pipe.set(keys.processed_key(queue), i)
    pipe.execute()
    client.close()
    return [RedisTrigger((f"bench:q{i}",), 10) for i in range(n)]


def server_cpu_s(port: int) -> float:
    cpu = redis.Redis(port=port).info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def longest_command_ms(port: int) -> float:
    """The costliest command kind's mean server time per call since the last reset: how
    long one call keeps every other client of the server waiting."""
    stats = redis.Redis(port=port).info("commandstats")
    return max((float(v["usec_per_call"]) for k, v in stats.items() if k != "cmdstat_info"),
               default=0.0) / 1e3  # fmt: skip


async def naive_read(client: aioredis.Redis, triggers: list[RedisTrigger]) -> None:
    for trigger in triggers:
        for queue in trigger.lists:
            await client.llen(queue)
            await client.get(keys.processed_key(queue))


async def measure(port: int, cycle: Callable[[], Awaitable[object]], cycles: int) -> list[float]:
    """Median round trips, client CPU ms, wall ms and server ms of ``cycles`` cycles, and
    the longest command's server ms."""
    await cycle()  # warm-up: connect, load the script
    redis.Redis(port=port).config_resetstat()
    samples: list[tuple[float, float, float, float]] = []
    for _ in range(cycles):
        sent, server = CountingConnection.sent, server_cpu_s(port)
        cpu, wall = time.process_time(), time.perf_counter()
        await cycle()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        server = server_cpu_s(port) - server
        samples.append((CountingConnection.sent - sent, cpu * 1e3, wall * 1e3, server * 1e3))
    return [
        *(statistics.median(column) for column in zip(*samples, strict=True)),
        longest_command_ms(port),
    ]


async def bench_size(port: int, n: int, cycles: int) -> list[tuple[str, list[float]]]:
    triggers = populate(port, n)
    url = f"redis://127.0.0.1:{port}/0"
    rows = []
    for path in ("lua", "pipeline", "naive"):
        client = make_client(
            url, RedisCredentials.from_env({}), connection_class=CountingConnection
        )
        source = RedisSource(url, client=client, use_lua=path == "lua")
        if path == "naive":
            naive = functools.partial(naive_read, client, triggers)
            figures = await measure(port, naive, min(cycles, 3))
        else:
            readings = await source.read(triggers)
            assert all(r.value is not None and r.consumers == 1 for r in readings), readings[:3]
            figures = await measure(port, functools.partial(source.read, triggers), cycles)
        await source.aclose()
        rows.append((path, figures))
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 100, 1000, 10000])
    parser.add_argument("--cycles", type=int, default=5, help="measured cycles per path")
    args = parser.parse_args()
    process, port = start_redis()
    try:
        print(f"redis-server {redis.Redis(port=port).info()['redis_version']}, "
              f"redis-py {redis.__version__}, hiredis {HIREDIS_AVAILABLE}, "
              f"median of {args.cycles} cycles (naive: ≤ 3)\n")  # fmt: skip
        print("| workloads | path | round trips | client CPU ms | wall ms | server CPU ms "
              "| longest command ms |")  # fmt: skip
        print("|---:|---|---:|---:|---:|---:|---:|")
        for n in args.sizes:
            for path, (trips, cpu, wall, server, stall) in await bench_size(port, n, args.cycles):
                print(f"| {n:,} | {path} | {trips:,.0f} | {cpu:.1f} | {wall:.1f} | {server:.1f} "
                      f"| {stall:.2f} |")  # fmt: skip
    finally:
        process.terminate()
        process.wait(5)


if __name__ == "__main__":
    asyncio.run(main())
