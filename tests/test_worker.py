"""The in-process worker API (``autoscaler.worker``) against a real redis-server: settling
messages, the controller's drain, SIGTERM and SIGKILL of a real worker process (the
example, ``examples/worker_inprocess.py``), counted by message id."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from autoscaler import keys, redisqueue
from autoscaler.drain import Reaper
from autoscaler.errors import QueueError
from autoscaler.keys import Command, ConsumerState
from autoscaler.metrics import ControllerMetrics
from autoscaler.worker import Message, Worker
from tests.e2e import LIVE, ROOT, eventually

Q = "jobs"


def fast(redis_url: str, cid: str = "w1", **settings: Any) -> Worker:
    """A worker with a short heartbeat, leaving the test process's signals alone."""
    return Worker(redis_url, Q, consumer_id=cid, heartbeat_interval_s=0.1, handle_signals=False,
                  **settings)  # fmt: skip


EXAMPLE = ROOT / "examples" / "worker_inprocess.py"


def jobs(n: int, seconds: float = 0.0) -> list[bytes]:
    return [json.dumps({"id": f"m{i}", "seconds": seconds}).encode() for i in range(n)]


async def registry_state(redis: aioredis.Redis, cid: str) -> ConsumerState | None:
    for info in await redisqueue.read_registry(redis, Q):
        if info.consumer_id == cid:
            return info.state
    return None


async def processing(redis: aioredis.Redis, cid: str) -> list[bytes]:
    return [
        m for m in await redis.lrange(keys.processing_key(Q, cid), 0, -1) if isinstance(m, bytes)
    ]


async def test_messages_are_taken_acked_and_counted(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    sent = jobs(10)
    await redis_client.lpush(Q, *sent)
    seen: list[Message] = []
    async with fast(redis_url, "w1") as worker:
        assert await registry_state(redis_client, "w1") is ConsumerState.RUNNING
        async for message in worker:
            seen.append(message)
            assert await processing(redis_client, "w1") == [message.body]
            assert await message.ack()
            if len(seen) == len(sent):
                break
    assert sorted(m.body for m in seen) == sorted(sent)
    assert [m.deliveries for m in seen] == [1] * 10
    assert seen[0].id == keys.message_digest(seen[0].body)
    assert await redis_client.get(keys.processed_key(Q)) == b"10"
    (info,) = await redisqueue.read_registry(redis_client, Q)
    assert info.state is ConsumerState.DRAINED and not info.lease_alive  # a clean exit
    assert await redis_client.llen(Q) == 0 and await processing(redis_client, "w1") == []


async def test_nack_retries_then_dead_letters_and_release_does_not_count(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    await redis_client.lpush(Q, b"polite", b"poison")  # polite is taken first
    async with fast(redis_url, "w1", max_deliveries=2) as worker:
        deliveries: list[tuple[bytes, int]] = []
        async for message in worker:
            deliveries.append((message.body, message.deliveries))
            if message.body == b"polite" and len(deliveries) == 1:
                assert await message.release()  # not its fault: back, uncounted
            elif message.body == b"poison":
                assert await message.nack("boom")
            else:
                await message.ack()
            if await redis_client.llen(keys.dead_letter_key(Q)) and message.settled:
                break
    assert deliveries[:4] == [(b"polite", 1), (b"polite", 1), (b"poison", 1), (b"poison", 2)]
    assert await redis_client.lrange(keys.dead_letter_key(Q), 0, -1) == [b"poison"]
    reason = await redis_client.hget(keys.dead_reasons_key(Q), keys.message_digest(b"poison"))
    assert reason == b"boom"


async def test_leaving_the_message_block_without_ack_pushes_it_back(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    await redis_client.lpush(Q, b"a")
    async with fast(redis_url, "w1") as worker:
        message = await anext(worker)
        with pytest.raises(KeyError):
            async with message:
                raise KeyError("nope")  # an error nacks: counted, back to the queue
        assert message.settled and await redis_client.lrange(Q, 0, -1) == [b"a"]
        again = await anext(worker)
        assert again.deliveries == 2
        async with again:
            pass  # no ack: pushed back as well
        assert await redis_client.lrange(Q, 0, -1) == [b"a"]
        with pytest.raises(RuntimeError, match="already settled"):
            await again.ack()


async def test_a_cancel_inside_the_message_block_releases_it_uncounted(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    await redis_client.lpush(Q, b"a")
    async with fast(redis_url, "w1") as worker:
        message = await anext(worker)
        started = asyncio.Event()

        async def handle() -> None:
            async with message:
                started.set()
                await asyncio.Event().wait()  # work that never ends by itself

        task = asyncio.create_task(handle())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert message.settled and await redis_client.lrange(Q, 0, -1) == [b"a"]
        again = await anext(worker)
        assert again.deliveries == 1  # a cancel is not the message's failure
        await again.ack()


async def test_unsettled_messages_go_back_when_the_block_is_left(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    sent = jobs(3)
    await redis_client.lpush(Q, *sent)
    async with fast(redis_url, "w1", concurrency=2) as worker:
        held = [await anext(worker), await anext(worker)]
        assert await registry_state(redis_client, "w1") is ConsumerState.RUNNING
        assert sorted(await processing(redis_client, "w1")) == sorted(m.body for m in held)
    assert sorted(await redis_client.lrange(Q, 0, -1)) == sorted(sent)
    assert await processing(redis_client, "w1") == []
    assert not await held[0].ack()  # too late: it went back (at-least-once)


@pytest.fixture
async def worker(redis_url: str) -> AsyncIterator[Worker]:
    async with fast(redis_url, "w1", concurrency=3) as w:
        yield w


async def test_controller_drain_stops_taking_waits_for_acks_then_reports_drained(
    worker: Worker, redis_client: aioredis.Redis
) -> None:
    sent = jobs(6)
    await redis_client.lpush(Q, *sent)
    held = [await anext(worker) for _ in range(2)]
    await redisqueue.set_command(redis_client, "w1", Command.DRAIN, Q)

    async def draining() -> bool:
        return await registry_state(redis_client, "w1") is ConsumerState.DRAINING

    await eventually(draining, 5.0, "draining")
    nothing = asyncio.ensure_future(anext(worker))  # the iterator yields nothing now
    await asyncio.sleep(0)
    await held[0].ack()
    assert await registry_state(redis_client, "w1") is ConsumerState.DRAINING  # one still held
    await held[1].ack()

    async def drained() -> bool:
        return await registry_state(redis_client, "w1") is ConsumerState.DRAINED

    await eventually(drained, 5.0, "drained")
    assert not nothing.done()
    assert await redis_client.llen(Q) == 4 and await processing(redis_client, "w1") == []

    await redisqueue.set_command(redis_client, "w1", Command.RUN, Q)  # the drain is cancelled
    resumed = await asyncio.wait_for(nothing, 5.0)
    await resumed.ack()
    acked = [m.body for m in held] + [resumed.body]
    assert sorted(acked + await redis_client.lrange(Q, 0, -1)) == sorted(sent)


async def test_drain_timeout_pushes_back_what_is_still_held(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    sent = jobs(2)
    await redis_client.lpush(Q, *sent)
    async with fast(redis_url, "w1", concurrency=2, drain_timeout_s=0.2) as worker:
        held = [await anext(worker), await anext(worker)]
        await redisqueue.set_command(redis_client, "w1", Command.DRAIN, Q)

        async def drained() -> bool:
            return await registry_state(redis_client, "w1") is ConsumerState.DRAINED

        await eventually(drained, 5.0, "drained after the timeout")
        assert sorted(await redis_client.lrange(Q, 0, -1)) == sorted(sent)
        assert not await held[0].ack()  # already back in the queue


async def test_protect_is_seen_by_the_registry(
    worker: Worker, redis_client: aioredis.Redis
) -> None:
    await worker.protect(120)
    (info,) = await redisqueue.read_registry(redis_client, Q)
    assert 119_000 <= info.protected_ms <= 120_000
    assert 119 <= await worker.protection_s() <= 120
    await worker.protect(0)
    (info,) = await redisqueue.read_registry(redis_client, Q)
    assert info.protected_ms == 0
    with pytest.raises(ValueError, match=r"out of range 0\.\.172800"):
        await worker.protect(172_801)


async def test_an_unreachable_redis_is_a_queue_error_at_the_start() -> None:
    with pytest.raises(QueueError, match=r"connecting to 127\.0\.0\.1:1\b"):
        async with Worker("redis://127.0.0.1:1/0", Q, handle_signals=False):
            pass  # never reached


def test_bad_settings_are_one_clear_error() -> None:
    with pytest.raises(ValueError, match="Worker: concurrency: 0 must be at least 1"):
        Worker("redis://127.0.0.1:1/0", Q, concurrency=0)
    with pytest.raises(ValueError, match="Worker: consumer_id: 'a b' is not a valid id"):
        Worker("redis://127.0.0.1:1/0", Q, consumer_id="a b")


# ---- a real worker process: the example -------------------------------------------------


class ExampleWorker:
    """``examples/worker_inprocess.py`` as its own process; stdout lines ``done <id> <n>``."""

    def __init__(self, process: asyncio.subprocess.Process, out: Path) -> None:
        self.process, self.out = process, out

    @classmethod
    async def start(cls, redis_url: str, tmp_path: Path, pod: str, *flags: str) -> ExampleWorker:
        out = tmp_path / f"{pod}.out"
        with out.open("wb") as stdout, (tmp_path / f"{pod}.log").open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                sys.executable, str(EXAMPLE), "--redis-url", redis_url, "--queue", Q, *flags,
                stdout=stdout, stderr=stderr, env={"POD_NAME": pod, "PYTHONPATH": str(ROOT)},
            )  # fmt: skip
        LIVE.add(process)
        return cls(process, out)

    def done(self) -> list[str]:
        return [line.split()[1] for line in self.out.read_text().splitlines() if line]

    async def wait(self) -> int:
        return await asyncio.wait_for(self.process.wait(), 20)


async def _until_in_flight(redis: aioredis.Redis, cid: str, n: int) -> None:
    async def holding() -> bool:
        infos = {i.consumer_id: i for i in await redisqueue.read_registry(redis, Q)}
        return cid in infos and infos[cid].in_flight == n

    await eventually(holding, 15.0, f"{cid} holding {n}")


async def test_sigterm_drains_a_worker_process_and_nothing_is_lost(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    ids = [f"m{i}" for i in range(12)]
    await redis_client.lpush(Q, *(json.dumps({"id": i, "seconds": 0.5}) for i in ids))
    worker = await ExampleWorker.start(redis_url, tmp_path, "pod-a", "--concurrency", "3")
    await _until_in_flight(redis_client, "pod-a", 3)
    worker.process.send_signal(signal.SIGTERM)
    assert await worker.wait() == 0, (tmp_path / "pod-a.log").read_text()
    done = worker.done()
    assert len(done) >= 3  # the held jobs finished during the drain
    queued = [json.loads(m)["id"] for m in await redis_client.lrange(Q, 0, -1)]
    assert sorted(done + queued) == sorted(ids)  # every id once: none lost, none twice
    assert await processing(redis_client, "pod-a") == []
    (info,) = await redisqueue.read_registry(redis_client, Q)
    assert info.state is ConsumerState.DRAINED and not info.lease_alive


async def test_sigkill_of_a_worker_holding_messages_the_reaper_returns_them(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    ids = [f"m{i}" for i in range(10)]
    await redis_client.lpush(Q, *(json.dumps({"id": i, "seconds": 60}) for i in ids))
    worker = await ExampleWorker.start(redis_url, tmp_path, "pod-k", "--concurrency", "4")
    await _until_in_flight(redis_client, "pod-k", 4)
    assert len(await processing(redis_client, "pod-k")) == 4
    worker.process.kill()
    await worker.wait()

    reaper = Reaper(lambda url: redis_client, ControllerMetrics(CollectorRegistry()))
    reaped: list[int] = []

    async def reaped_all() -> bool:  # once the lease (3 heartbeats) has expired
        reaped.append(await reaper.reap(None, [Q]))
        return sum(reaped) == 4

    await eventually(reaped_all, 10.0, "the reaper returned the held messages")
    assert await processing(redis_client, "pod-k") == []
    back = await redis_client.lrange(Q, 0, -1) + await redis_client.lrange(
        keys.quarantine_key(Q), 0, -1
    )
    assert sorted(json.loads(m)["id"] for m in back) == sorted(ids)  # 0 lost by id

    # and another worker finishes them all (the 4 suspects one at a time, alone)
    async with fast(redis_url, "pod-z") as rescuer:
        finished: list[str] = []
        async for message in rescuer:
            finished.append(json.loads(message.body)["id"])
            await message.ack()
            if len(finished) == len(ids):
                break
    assert sorted(finished) == sorted(ids)
