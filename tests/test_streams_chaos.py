"""Chaos on a stream: stream sidecars SIGKILLed every 1–2 s while they consume — nothing lost.

3,000 uniquely numbered entries; three ``autoscaler consume --stream`` processes in front of
a processor with random latency and 5% HTTP 500s that records every body it accepts. A
killer SIGKILLs a random consuming sidecar every 1–2 s and starts a replacement: under the
same consumer id half the time (its start hands back what the dead one held), under a new
id otherwise (its entries are claimed by the others after --claim-min-idle), for 30 s or
until every entry is done; then the survivors finish. Every entry must reach the processor
at least once or sit in the dead-letter stream; duplicates are counted and printed.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from autoscaler.redisqueue import streams
from tests.processor import Processor

MESSAGES = 3_000
CHAOS_S = 30.0  # seconds of kills; on a loaded machine a restarted sidecar needs ~1 s to start
SIDECARS = 3
S, G = "jobs", "workers"


@dataclass
class Sidecar:
    consumer_id: str
    process: asyncio.subprocess.Process
    log: Path

    def consuming(self) -> bool:
        return self.process.returncode is None and b"consuming" in self.log.read_bytes()


async def start(redis_url: str, forward: str, consumer_id: str, tmp: Path, n: int) -> Sidecar:
    log = tmp / f"{consumer_id}-{n}.log"
    args = ["-m", "autoscaler", "consume", "--redis-url", redis_url, "--stream", S, "--group", G,
            "--forward", forward, "--id", consumer_id, "--concurrency", "2",
            "--heartbeat-interval", "0.2", "--claim-min-idle", "1", "--max-deliveries", "20",
            "--retry-backoff", "0.01", "--retry-max-backoff", "0.05", "--breaker-threshold",
            "50"]  # fmt: skip
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *args, stdout=asyncio.subprocess.DEVNULL, stderr=stderr
        )
    return Sidecar(consumer_id, process, log)


async def dead_bodies(redis: aioredis.Redis) -> list[bytes]:
    out: list[bytes] = []
    last = "-"
    while True:
        page = await streams.read_range(redis, f"{S}:dead", last, "+", 1000)
        page = [e for e in page if e[0] != last]
        if not page:
            return out
        for _, fields in page:
            out += [v for k, v in streams.dead_letter_fields(fields)[1] if k == b"body"]
        last = page[-1][0]


@pytest.mark.timeout(240)  # beyond the deadlines inside, so a slow run fails with their logs
async def test_sigkilled_stream_sidecars_lose_nothing(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    rng = random.Random(2026)
    bodies = [f"msg-{i:05d}".encode() for i in range(MESSAGES)]
    pipe = redis_client.pipeline(transaction=False)
    for body in bodies:
        pipe.xadd(S, {"body": body})
    await pipe.execute()
    started = time.monotonic()
    kills, n = 0, 0
    async with Processor(latency_s=(0.02, 0.06), fail_ratio=0.05, seed=7) as proc:
        sidecars: list[Sidecar] = []
        for i in range(SIDECARS):
            sidecars.append(await start(redis_url, proc.url, f"pod-{i}", tmp_path, n))
            n += 1
        try:
            chaos_until = time.monotonic() + CHAOS_S  # then the survivors finish the rest
            deadline = chaos_until + 120
            next_kill = time.monotonic() + rng.uniform(1, 2)
            while True:
                dead = set(await dead_bodies(redis_client))
                if set(proc.accepted) | dead >= set(bodies):
                    break
                assert time.monotonic() < deadline, (
                    f"{len(set(proc.accepted))} accepted after {kills} kills; "
                    f"logs: {[s.log.read_text()[-2000:] for s in sidecars]}"
                )
                if next_kill <= time.monotonic() < chaos_until:
                    alive = [s for s in sidecars if s.consuming()]
                    if alive:
                        victim = rng.choice(alive)
                        victim.process.send_signal(signal.SIGKILL)
                        await victim.process.wait()
                        kills += 1
                        same = rng.random() < 0.5
                        new_id = victim.consumer_id if same else f"pod-new-{n}"
                        sidecars[sidecars.index(victim)] = await start(
                            redis_url, proc.url, new_id, tmp_path, n
                        )
                        n += 1
                    next_kill = time.monotonic() + rng.uniform(1, 2)
                await asyncio.sleep(0.05)
        finally:
            for sidecar in sidecars:
                if sidecar.process.returncode is None:
                    sidecar.process.send_signal(signal.SIGTERM)
            for sidecar in sidecars:
                try:
                    async with asyncio.timeout(15):
                        await sidecar.process.wait()
                except TimeoutError:
                    sidecar.process.kill()
                    await sidecar.process.wait()
    elapsed = time.monotonic() - started
    accepted = list(proc.accepted)
    lost = set(bodies) - set(accepted) - dead
    duplicates = len(accepted) - len(set(accepted))
    print(f"\nstream chaos: {MESSAGES} entries, {kills} SIGKILLs, {len(lost)} lost, "
          f"{duplicates} duplicates, {len(dead)} dead-lettered, {elapsed:.1f}s")  # fmt: skip
    assert lost == set()
    assert kills >= 8  # the run really was chaotic
