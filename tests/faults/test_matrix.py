"""The fault matrix: one fault per test, real processes, messages counted by id.

Each test produces numbered messages, injects its fault while messages are held, ends it,
and waits until every id was processed or dead-lettered. It asserts 0 lost (Redis keeps
its data here: AOF ``always``), nothing stranded in a processing list or the quarantine,
no innocent message dead-lettered, and every sidecar recovered by itself (running again,
or restarted under the same id as a kubelet would). Duplicates are counted, not
forbidden: delivery is at-least-once. Timings are shortened with flags
(``--redis-timeout``, ``--request-timeout``, ``--heartbeat-interval``) so that the whole
matrix takes about two minutes; ``bench/faults_long.py`` runs the long variants.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from tests.e2e import eventually
from tests.faults.harness import (
    DurableRedis,
    Q,
    Recorder,
    Rig,
    ident,
    message,
    report,
    rig,
)

pytestmark = pytest.mark.timeout(150)


async def produce(r: Rig, ids: range, size: int = 0, **extra: object) -> set[int]:
    batch = [message(i, size, **extra) for i in ids]
    for start in range(0, len(batch), 100):
        await r.redis.lpush(Q, *batch[start : start + 100])
    return set(ids)


async def accepted_at_least(r: Rig, n: int) -> None:
    await eventually(lambda: r.recorder.accepted.total() >= n, 30, f"{n} accepted")


async def quiet(r: Rig) -> None:
    """Until nothing is held any more: every ack landed, no orphan left behind."""

    async def empty() -> bool:
        return await r.stranded() == 0

    await eventually(empty, 30, "processing lists and quarantine empty", r.procs())


def all_running(r: Rig) -> bool:
    return all(p.process.returncode is None for p in r.consumers.values())


async def test_redis_sigkill_and_restart_with_aof_always(
    durable: DurableRedis, tmp_path: Path
) -> None:
    recorder = Recorder(latency_s=0.01)
    async with rig(durable.url, tmp_path, 3, "--concurrency", "4", recorder=recorder) as r:
        ids = await produce(r, range(600))
        await accepted_at_least(r, 100)
        durable.signal(signal.SIGKILL)
        durable.start()  # the same port and AOF file
        ended = time.monotonic()
        recovery = await r.settled(ids, 60)
        await quiet(r)
        row = report("Redis SIGKILL + restart (AOF always)", r, ids, await r.dead(), recovery)
        assert row["lost"] == 0 and row["dead_lettered"] == 0
        assert all_running(r) and r.restarts == 0, time.monotonic() - ended


async def test_redis_sigstop_past_the_socket_timeout(durable: DurableRedis, tmp_path: Path) -> None:
    recorder = Recorder(latency_s=0.05)
    flags = ("--concurrency", "4", "--redis-timeout", "1.5", "--reconcile-interval", "2")
    async with rig(durable.url, tmp_path, 3, *flags, recorder=recorder) as r:
        ids = await produce(r, range(400))
        await accepted_at_least(r, 40)
        durable.signal(signal.SIGSTOP)
        await asyncio.sleep(4.0)  # the fault itself: a stall past the 1.5 s reply timeout
        durable.signal(signal.SIGCONT)
        recovery = await r.settled(ids, 60)
        await quiet(r)
        row = report("Redis SIGSTOP 4 s (reply timeout 1.5 s)", r, ids, await r.dead(), recovery)
        assert row["lost"] == 0 and row["dead_lettered"] == 0
        assert all_running(r)


async def test_processor_down(redis_url: str, tmp_path: Path) -> None:
    recorder = Recorder(latency_s=0.01)
    async with rig(redis_url, tmp_path, 2, "--concurrency", "4", recorder=recorder) as r:
        ids = await produce(r, range(300))
        await accepted_at_least(r, 50)
        await recorder.stop()
        await asyncio.sleep(8.0)  # the fault: port closed, messages held and probed
        await recorder.start()
        recovery = await r.settled(ids, 60)
        await quiet(r)
        row = report("processor down 8 s (connection refused)", r, ids, await r.dead(), recovery)
        assert row["lost"] == 0 and row["dead_lettered"] == 0
        assert all_running(r)


async def test_processor_answers_500_to_everything(redis_url: str, tmp_path: Path) -> None:
    recorder = Recorder(mode="500")
    async with rig(redis_url, tmp_path, 2, "--concurrency", "4", recorder=recorder) as r:
        ids = await produce(r, range(200))
        await asyncio.sleep(8.0)  # the fault: every answer a 500, past 5 deliveries' backoff
        assert await r.dead() == []  # the breaker opened: failures not counted
        recorder.mode = "ok"
        recovery = await r.settled(ids, 60)
        await quiet(r)
        row = report("processor 500 to everything, 8 s", r, ids, await r.dead(), recovery)
        assert row["lost"] == 0 and row["dead_lettered"] == 0
        assert all_running(r)


async def test_processor_hangs_past_the_request_timeout(redis_url: str, tmp_path: Path) -> None:
    flags = ("--concurrency", "4", "--request-timeout", "0.5", "--max-deliveries", "3")
    async with rig(redis_url, tmp_path, 2, *flags) as r:
        ids = await produce(r, range(200))
        await r.redis.lpush(Q, message(200, hang=True))
        ids.add(200)
        started = time.monotonic()
        recovery = await r.settled(ids, 60)
        await quiet(r)
        row = report("one message hangs the processor", r, ids, await r.dead(), recovery)
        assert [ident(m) for m in await r.dead()] == [200]  # only the hanging one
        assert row["lost"] == 0 and all_running(r), time.monotonic() - started


async def test_a_message_that_sigkills_its_consumer(redis_url: str, tmp_path: Path) -> None:
    recorder = Recorder(latency_s=0.02)
    flags = ("--concurrency", "4", "--max-deliveries", "3")
    async with rig(redis_url, tmp_path, 2, *flags, recorder=recorder) as r:
        recorder.on_poison = r.kill
        ids = await produce(r, range(100))
        await r.redis.lpush(Q, message(100, poison=True))
        ids |= await produce(r, range(101, 200))
        ids.add(100)
        recovery = await r.settled(ids, 90)
        await quiet(r)
        row = report("a message SIGKILLs its consumer", r, ids, await r.dead(), recovery)
        assert [ident(m) for m in await r.dead()] == [100]  # innocent neighbours never
        assert row["lost"] == 0 and r.restarts >= 3
        await eventually(lambda: all_running(r), 30, "every sidecar running again")


async def test_1mb_messages_and_one_over_the_limit(redis_url: str, tmp_path: Path) -> None:
    flags = ("--concurrency", "2", "--max-message-bytes", str(1 << 20))
    async with rig(redis_url, tmp_path, 2, *flags) as r:
        ids = await produce(r, range(40), size=(1 << 20) - 100)
        await r.redis.lpush(Q, message(40, size=1 << 20))
        ids.add(40)
        recovery = await r.settled(ids, 60)
        await quiet(r)
        row = report("1 MB messages, one over --max-message-bytes", r, ids, await r.dead(),
                     recovery)  # fmt: skip
        assert [ident(m) for m in await r.dead()] == [40]
        assert row["lost"] == 0 and all_running(r)


async def test_a_sidecar_sigstopped_past_its_lease(redis_url: str, tmp_path: Path) -> None:
    recorder = Recorder(latency_s=0.02)
    async with rig(redis_url, tmp_path, 2, "--concurrency", "4", recorder=recorder) as r:
        ids = await produce(r, range(400))
        await accepted_at_least(r, 40)
        stopped = r.consumers["c0"]
        stopped.process.send_signal(signal.SIGSTOP)
        await asyncio.sleep(3.0)  # the fault: 5 leases (0.6 s); the reaper takes its messages
        stopped.process.send_signal(signal.SIGCONT)
        recovery = await r.settled(ids, 60)
        await quiet(r)
        row = report("a sidecar SIGSTOPped 3 s (lease 0.6 s)", r, ids, await r.dead(), recovery)
        assert row["lost"] == 0 and row["dead_lettered"] == 0
        assert all_running(r) and r.restarts == 0
