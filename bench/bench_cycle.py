"""Cost of one controller cycle at 1, 100, 1,000 and 10,000 annotated workloads.

Runs the real ``Controller`` (batched read through ``SourcePool``, the policy, metrics)
against a private redis-server, with targets that count the writes they are asked for,
and beside it a naive loop that does one ``LLEN`` and one GET of the replica count per
workload. Prints, per size: Redis round trips per cycle, controller CPU ms per cycle
(``time.process_time``), wall ms, Kubernetes-style writes per steady cycle, and memory per
workload (tracemalloc). Usage: ``.venv/bin/python bench/bench_cycle.py [--sizes 1,100,...]``.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import logging
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from redis.asyncio.connection import Connection

sys.path.insert(0, str(Path(__file__).parent.parent))

from autoscaler.annotations import ANNOTATION_PREFIX
from autoscaler.controller import Controller
from autoscaler.exposition import Exposition
from autoscaler.logs import TextFormatter, log_event
from autoscaler.metrics import ControllerMetrics
from autoscaler.redisconn import RedisCredentials, make_client
from autoscaler.sources import SourcePool
from autoscaler.sources.redis import CHUNK_QUEUES, READ_SCRIPT, RedisSource, _chunked_args
from autoscaler.workload import ReplicaInfo, WorkloadEvent, WorkloadRef

CYCLES = 5
PROFILE: cProfile.Profile | None = None  # --profile: the measured cycles, nothing else
# what a workload's metrics allocate: their series, and prometheus_client's objects
METRICS_FILES = re.compile(r"autoscaler/(metrics|workloadseries)\.py|prometheus_client/")
MOVE = """for i = 1, tonumber(ARGV[1]) do
  if (i + tonumber(ARGV[2])) % 2 == 0 then redis.call('LPUSH', 'q' .. (i - 1), 'm')
  else redis.call('RPOP', 'q' .. (i - 1)) end
end"""  # every queue's length changes: pushed on odd cycles, popped on even ones


async def profiled(cycle: Awaitable[int]) -> int:
    """``await cycle``, under ``PROFILE`` when ``--profile`` asked for it."""
    if PROFILE is None:
        return await cycle
    PROFILE.enable()
    try:
        return await cycle
    finally:
        PROFILE.disable()


@dataclass
class CountingTarget:
    """Counts the writes the loop asks for (each would be one Kubernetes API call)."""

    ref: WorkloadRef
    writes: list[str] = field(default_factory=list)

    async def scale(self, replicas: int, *, expected: int | None = None) -> None:
        self.writes.append("scale")

    async def replicas(self) -> list[ReplicaInfo]:
        return []

    async def set_deletion_cost(self, name: str, cost: int | None) -> None:
        self.writes.append("cost")

    async def record_event(self, reason: str, message: str, *, warning: bool = False) -> None:
        self.writes.append("event")

    async def write_status(self, status: Mapping[str, object]) -> None:
        self.writes.append("status")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class CountingConnection(Connection):
    """Counts requests sent: one per command, one per whole pipeline (= round trips)."""

    sent = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        await super().send_packed_command(command, check_health)


def counted_source(url: str) -> RedisSource:
    client = make_client(url, RedisCredentials.from_env({}), connection_class=CountingConnection)
    return RedisSource(url, client=client)


async def client_commands(client: aioredis.Redis) -> int:
    """Commands sent by clients (Lua's inner calls excluded): total minus script-internal."""
    stats = await client.info("commandstats")
    return sum(int(v.get("calls", 0)) for k, v in stats.items() if k.startswith("cmdstat_"))


def backlog(i: int, within_band: bool) -> int:
    """Queue i's length before the first cycle. Within band: 10·k + 5 messages at 10
    per replica, for k + 1 replicas, so that ±1 message never changes the decision; else
    1-7 messages at 2 per replica, where ±1 changes half the decisions every cycle (a
    ScaleDownStabilized ↔ DesiredWithinRange flip, or for 1 ↔ 0 an Active ↔ Idle one)."""
    return 10 * (i % 7) + 5 if within_band else i % 7 + 1


def replicas(i: int, within_band: bool) -> int:
    return i % 7 + 1 if within_band else max(1, -(-(i % 7 + 1) // 2))


async def setup(client: aioredis.Redis, n: int, within_band: bool = False) -> None:
    await client.flushall()
    async with client.pipeline(transaction=False) as pipe:
        for i in range(n):
            pipe.lpush(f"q{i}", *[b"m"] * backlog(i, within_band))
            pipe.set(f"replicas:q{i}", 3)
        await pipe.execute()


async def lua_read_floor(client: aioredis.Redis, queues: list[str]) -> float:
    """CPU seconds of the bare read: the same script calls in one pipelined round trip,
    the reply parsed by hiredis, nothing built from it (no readings, no memo)."""
    _, calls = _chunked_args(queues, CHUNK_QUEUES)
    await READ_SCRIPT.many(client, calls)  # loaded
    c0 = time.process_time()
    await READ_SCRIPT.many(client, calls)
    return time.process_time() - c0


def decision_lines_cpu(count: int) -> float:
    """CPU seconds of ``count`` "decision" log lines as the loop writes one per changed
    decision (``Controller._decide``): the text format, at INFO, to /dev/null. The bench
    runs with logging off, so a cycle's figure leaves them out; this is what they add,
    and a floor for any cycle in which that many decisions change."""
    logger = logging.getLogger("autoscaler.controller.loop")
    with open(os.devnull, "w") as sink:
        handler = logging.StreamHandler(sink)
        handler.setFormatter(TextFormatter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        try:
            c0 = time.process_time()
            for i in range(count):
                log_event(logger, "decision", namespace="bench", workload=f"w{i}", current=3,
                          desired=3, reason="ScaleDownStabilized", dry_run=False,
                          message="q 4 / 2 per replica → 2; holding 3, the highest "
                          "recommendation of the last 300s")  # fmt: skip
            return time.process_time() - c0
        finally:
            logger.removeHandler(handler)
            logger.setLevel(logging.NOTSET)


async def bench_scrape(metrics: ControllerMetrics, exposition: Exposition) -> dict[str, float]:
    """One /metrics render as the controller serves it (``metrics.render`` in a worker
    thread, ``exposition.Exposition``) while a probe measures how late the event loop's
    timers fire (its floor: the same probe as long without a render); beside it
    prometheus_client's ``generate_latest`` of the same registry, and the render's floor:
    as many ready-made lines joined. Called after every moving cycle: the
    first render fills the renderer's cache, the next ones re-format only what moved."""
    stalls: list[float] = []
    idle: list[float] = []

    async def probe(into: list[float]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.01)
            into.append(loop.time() - before - 0.01)

    probing = asyncio.create_task(probe(stalls))
    await asyncio.sleep(0.05)
    w0 = time.perf_counter()
    parts = await exposition.body()
    render = time.perf_counter() - w0
    body = parts if isinstance(parts, bytes) else b"".join(parts)
    probing.cancel()
    probing = asyncio.create_task(probe(idle))  # the floor: the same probe, no render
    await asyncio.sleep(max(0.2, render))
    probing.cancel()
    lines = body.count(b"\n")
    c0 = time.perf_counter()
    generate_latest(metrics.registry)
    reference = time.perf_counter() - c0
    ready = [b'queue_autoscaler_x{namespace="bench",workload="w1"} 1.0'] * lines
    c0 = time.perf_counter()
    b"\n".join(ready)
    return {
        "render_ms": 1000 * render,
        "lines": lines,
        "mb": len(body) / 1e6,
        "lag_ms": 1000 * max(stalls, default=0.0),
        "idle_lag_ms": 1000 * max(idle, default=0.0),
        "join_ms": 1000 * (time.perf_counter() - c0),
        "reference_ms": 1000 * reference,
    }


async def move_every_queue(client: aioredis.Redis, n: int, cycle: int) -> None:
    await client.eval(MOVE, 0, n, cycle)


async def bench_controller(
    url: str, client: aioredis.Redis, n: int, moving: bool = False, within_band: bool = False
) -> dict[str, float]:
    pool = SourcePool(redis_url=url, redis_factory=counted_source)
    targets: dict[WorkloadRef, CountingTarget] = {}
    tracemalloc.start()
    before_mem = tracemalloc.get_traced_memory()[0]
    controller = Controller(
        sources=pool,
        target_factory=lambda ref: targets.setdefault(ref, CountingTarget(ref)),
        metrics=ControllerMetrics(CollectorRegistry()),
    )
    for i in range(n):
        annotations = {
            ANNOTATION_PREFIX + "redis-list": f"q{i}",
            ANNOTATION_PREFIX + "messages-per-replica": "10" if within_band else "2",
            ANNOTATION_PREFIX + "min-replicas": "1",
        }
        ref, count = WorkloadRef("bench", f"w{i}"), replicas(i, within_band)
        controller.apply(WorkloadEvent(ref, annotations, count))
    await controller.cycle()  # warm up: loads the script, first statuses
    await asyncio.sleep(0)
    # Statuses are written one at a time by a task of this loop: yield until it is done
    # (the writer has no completion event of its own, and needs none outside a bench).
    while controller.statuses.pending:  # noqa: ASYNC110
        await asyncio.sleep(0)
    await asyncio.sleep(0)
    per_workload = (tracemalloc.get_traced_memory()[0] - before_mem) / n
    metrics_bytes, render_bytes, cold_cpu = 0.0, 0.0, 0.0
    if moving:  # what of it is the metrics'; then the first render's cache and body
        snapshot = tracemalloc.take_snapshot().statistics("filename")
        metrics_bytes = sum(s.size for s in snapshot if METRICS_FILES.search(str(s.traceback)))
        held, c0 = tracemalloc.get_traced_memory()[0], time.thread_time()
        body = controller.metrics.render()
        cold_cpu = time.thread_time() - c0
        render_bytes = (tracemalloc.get_traced_memory()[0] - held) / n
        del body, snapshot
    tracemalloc.stop()
    for t in targets.values():
        t.writes.clear()
    cpu, wall, trips, writes, floor, decided_share = [], [], [], 0, [], []
    render_cpu: list[float] = []

    def timed_render() -> list[bytes]:  # CPU of the render thread: wall swings with the load
        c0 = time.thread_time()
        body = controller.metrics.render()
        render_cpu.append(time.thread_time() - c0)
        return body

    exposition = Exposition(controller.metrics.registry, render=timed_render)
    scrapes: list[dict[str, float]] = []
    for cycle in range(CYCLES):
        for w in controller.workloads.values():
            w.due_at = 0.0
        if moving:  # every length changes; then the floor: the bare Lua read of them all
            await move_every_queue(client, n, cycle)
            gc.collect()
            floor.append(await lua_read_floor(client, [f"q{i}" for i in range(n)]))
        sent = CountingConnection.sent
        gc.collect()
        c0, w0 = time.process_time(), time.perf_counter()
        decided = await profiled(controller.cycle())
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
        assert decided == n
        # the rest were held (steady, or within their band: policy.band)
        decided_share.append(sum(w.skipped_at is None for w in controller.workloads.values()) / n)
        trips.append(CountingConnection.sent - sent)
        await asyncio.sleep(0)  # let any spawned write run
        writes += sum(len(t.writes) for t in targets.values())
        if moving:
            scrapes.append(await bench_scrape(controller.metrics, exposition))
            scrapes[-1]["render_cpu_ms"] = 1000 * render_cpu[-1]
    scrape: dict[str, float] = {}
    if scrapes:  # the first render (cold cache, traced) came before the cycles: medians
        warm = scrapes
        scrape = {**scrapes[0], "cold_cpu_ms": 1000 * cold_cpu}
        for key in (
            "render_ms",
            "render_cpu_ms",
            "lag_ms",
            "idle_lag_ms",
            "join_ms",
            "reference_ms",
        ):
            scrape[key] = statistics.median(r[key] for r in warm)
        scrape["render_max_ms"] = max(r["render_ms"] for r in warm)
        scrape["lag_max_ms"] = max(r["lag_ms"] for r in warm)
    await controller.aclose()
    await pool.aclose()
    return {
        **scrape,
        "trips": sum(trips) / CYCLES,
        "cpu_ms": 1000 * statistics.median(cpu),
        "cpu_min_ms": 1000 * min(cpu),
        "cpu_max_ms": 1000 * max(cpu),
        "floor_ms": 1000 * statistics.median(floor) if floor else 0.0,
        "decided": statistics.median(decided_share),
        "wall_ms": 1000 * min(wall),
        "writes": writes / CYCLES,
        "bytes": per_workload,
        "metrics_bytes": metrics_bytes / n,
        "render_bytes": render_bytes,
    }


async def bench_naive(client: aioredis.Redis, n: int) -> dict[str, float]:
    """One LLEN and one GET per workload, awaited one after the other."""
    cpu, wall = [], []
    for _ in range(max(1, CYCLES // 2) if n >= 10_000 else CYCLES):
        before = await client_commands(client)
        c0, w0 = time.process_time(), time.perf_counter()
        for i in range(n):
            length = await client.llen(f"q{i}")
            current = int(await client.get(f"replicas:q{i}") or 0)
            _ = max(1, -(-length // 2)) != current
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
        trips = await client_commands(client) - before - 1
    return {
        "trips": trips,
        "cpu_ms": 1000 * min(cpu),
        "wall_ms": 1000 * min(wall),
        "writes": 0.0,
        "bytes": 0.0,
    }


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server not found: install it (make test does)")
    port = free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    return server, f"redis://127.0.0.1:{port}/0"


async def main_moving(
    sizes: list[int], url: str, client: aioredis.Redis, within_band: bool
) -> None:
    """Every queue's length changes before every cycle (see ``backlog`` for what that
    does to the decisions). The floor is one Lua read of the same moved queues through a
    fresh source, in the same run."""
    print(f"{'workloads':>9} | {'cycle CPU ms median (min-max)':>30} | {'floor ms':>8} | ratio")
    print("-" * 66)
    for n in sizes:
        await setup(client, n, within_band)
        r = await bench_controller(url, client, n, moving=True, within_band=within_band)
        print(
            f"{n:>9} | {r['cpu_ms']:>11.1f} ({r['cpu_min_ms']:.1f}-{r['cpu_max_ms']:.1f})"
            f"{'':>9} | {r['floor_ms']:>8.1f} | {r['cpu_ms'] / r['floor_ms']:.1f}x"
        )
        print(
            f"{'':>9}   through decide: {100 * r['decided']:.0f}% of the workloads per cycle "
            "(median); the rest held, steady or within their band"
        )
        if changed := round(r["decided"] * n):
            print(
                f"{'':>9}   their decisions' log lines, not in the figure above (logging is "
                f"off here): {1000 * decision_lines_cpu(changed):.0f} ms CPU for {changed}, "
                "text to /dev/null"
            )
        print(
            f"{'':>9}   /metrics: {r['lines']:.0f} lines, {r['mb']:.1f} MB, rendered off-loop "
            f"after a moving cycle in {r['render_ms']:.0f} ms wall, "
            f"{r['render_cpu_ms']:.0f} ms CPU, "
            f"medians of {CYCLES} (wall max {r['render_max_ms']:.0f}; first, cold cache, "
            f"under tracemalloc: {r['cold_cpu_ms']:.0f} ms CPU); generate_latest: "
            f"{r['reference_ms']:.0f} ms; floor, joining as many ready lines: "
            f"{r['join_ms']:.1f} ms (CPU {r['render_cpu_ms'] / r['join_ms']:.1f}x)"
        )
        print(
            f"{'':>9}   event loop's longest stall during a render: {r['lag_ms']:.1f} ms median "
            f"(max {r['lag_max_ms']:.1f}); floor, the same probe "
            f"as long without a render: {r['idle_lag_ms']:.1f} ms median"
        )
        print(
            f"{'':>9}   memory (tracemalloc) after the first cycle: {r['bytes']:,.0f} bytes a "
            f"workload, {r['metrics_bytes']:,.0f} of them the metrics' series; the first "
            f"/metrics render's cache and body: {r['render_bytes']:,.0f} bytes a workload"
        )


async def main(sizes: list[int], url: str, moving: bool = False, within_band: bool = False) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        for _ in range(100):
            try:
                await client.ping()
                break
            except Exception:
                await asyncio.sleep(0.05)
        if moving:
            await main_moving(sizes, url, client, within_band)
            return
        print(
            f"{'workloads':>9} | {'loop':<10} | {'round trips':>11} | {'CPU ms':>8} | "
            f"{'wall ms':>8} | {'writes':>6} | {'bytes/workload':>14}"
        )
        print("-" * 84)
        for n in sizes:
            await setup(client, n)
            for name, result in (
                ("controller", await bench_controller(url, client, n)),
                ("naive", await bench_naive(client, n)),
            ):
                print(
                    f"{n:>9} | {name:<10} | {result['trips']:>11.0f} | {result['cpu_ms']:>8.1f} "
                    f"| {result['wall_ms']:>8.1f} | {result['writes']:>6.0f} | "
                    f"{result['bytes']:>14.0f}"
                )
    finally:
        await client.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,100,1000,10000")
    parser.add_argument(
        "--moving", action="store_true", help="every queue moves before every cycle"
    )
    parser.add_argument(
        "--within-band",
        action="store_true",
        help="with --moving: every queue moves, no decision changes (see backlog())",
    )
    parser.add_argument(
        "--profile", metavar="FILE", help="cProfile the measured cycles into FILE (pstats); "
        "the figures printed are then not the product's",
    )  # fmt: skip
    args = parser.parse_args()
    if args.profile:
        PROFILE = cProfile.Profile()
    redis_server, redis_url = start_redis()
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
        asyncio.run(main(sizes, redis_url, args.moving, args.within_band))
    finally:
        redis_server.terminate()
        redis_server.wait()
        if PROFILE is not None:
            PROFILE.dump_stats(args.profile)
