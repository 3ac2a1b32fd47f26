"""The sidecar's stream backend against a real redis-server and a local processor.

In-process ``StreamWorker``s with short timings; synchronisation by polling with deadlines.
Entries are counted by id.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
import pytest
import redis.asyncio as aioredis
from aiohttp import web
from prometheus_client import CollectorRegistry

from autoscaler import keys, redisqueue
from autoscaler.consumer import ConsumerMetrics, ConsumerSettings
from autoscaler.consumer.cli import register, settings_from_args
from autoscaler.consumer.stream import StreamOptions, StreamWorker
from autoscaler.errors import InputError
from autoscaler.keys import Command, ConsumerState
from autoscaler.redisqueue import streams
from tests.servers import free_port
from tests.test_consumer import FAST, until

S, G = "events", "workers"


@dataclass
class Seen:
    """One POST: the entry id, its delivery count and body."""

    entry_id: str
    count: int
    body: bytes


@dataclass
class ByBody:
    """A processor answering by body: ``fail`` bodies get 500, ``hang`` bodies wait."""

    fail: set[bytes] = field(default_factory=set)
    hang: set[bytes] = field(default_factory=set)
    seen: list[Seen] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)  # entry ids answered 2xx
    released: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        entry_id = request.headers["X-Stream-Entry-Id"]
        self.seen.append(Seen(entry_id, int(request.headers["X-Delivery-Count"]), body))
        if body in self.hang:
            await self.released.wait()
        if body in self.fail:
            return web.Response(status=500, text="failed")
        if request.transport is not None and not request.transport.is_closing():
            self.accepted.append(entry_id)  # a 2xx the consumer never saw is no acceptance
        return web.Response(text="ok")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/process"

    def counts(self, entry_id: str) -> list[int]:
        return [s.count for s in self.seen if s.entry_id == entry_id]


@contextlib.asynccontextmanager
async def serving(processor: ByBody, port: int = 0) -> AsyncIterator[ByBody]:
    app = web.Application()
    app.router.add_post("/process", processor.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    processor.port = runner.addresses[0][1]
    try:
        yield processor
    finally:
        processor.released.set()
        await runner.cleanup()


@dataclass
class Running:
    worker: StreamWorker
    task: asyncio.Task[None]
    registry: CollectorRegistry


@contextlib.asynccontextmanager
async def consuming(
    redis: aioredis.Redis, url: str, consumer_id: str = "c1", min_idle_s: float = 0.5,
    **overrides: Any,
) -> AsyncIterator[Running]:  # fmt: skip
    settings = ConsumerSettings(S, url, consumer_id, **{**FAST, **overrides})
    registry = CollectorRegistry()
    async with aiohttp.ClientSession() as session:
        metrics = ConsumerMetrics(registry, S)
        worker = StreamWorker(redis, session, settings, metrics, StreamOptions(G, min_idle_s),
                              rng=random.Random(4))  # fmt: skip
        task = asyncio.create_task(worker.run(), name="stream-worker-under-test")
        try:
            yield Running(worker, task, registry)
        finally:
            worker.request_stop()
            worker.request_stop()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def add(redis: aioredis.Redis, *bodies: bytes) -> list[str]:
    ids = [await redis.xadd(S, {"body": b}) for b in bodies]
    return [i.decode() if isinstance(i, bytes) else i for i in ids]


async def pending(redis: aioredis.Redis) -> int:
    info: Any = await redis.xpending(S, G)
    return int(info["pending"])


async def dead_letters(redis: aioredis.Redis) -> list[dict[str, str]]:
    return [ours for _, fields in await streams.read_range(redis, f"{S}:dead")
            for ours in [streams.dead_letter_fields(fields)[0]]]  # fmt: skip


def settled(processor: ByBody, redis: aioredis.Redis, n: int) -> Callable[[], Any]:
    async def check() -> bool:
        return len(processor.accepted) >= n and await pending(redis) == 0

    return check


async def test_acks_after_a_2xx_and_counts_processed(redis_client: aioredis.Redis) -> None:
    ids = await add(redis_client, *[f"m{i}".encode() for i in range(20)])
    async with serving(ByBody()) as proc, consuming(redis_client, proc.url, concurrency=4):
        await until(settled(proc, redis_client, 20), "20 entries acked")
    assert sorted(proc.accepted) == sorted(ids)
    assert all(s.count == 1 for s in proc.seen)
    assert await redis_client.get(keys.processed_key(S)) == b"20"
    (info,) = await redisqueue.read_registry(redis_client, S)  # registered under the stream's name
    assert info.consumer_id == "c1" and info.state is ConsumerState.DRAINED


async def test_identical_bodies_are_dead_lettered_each_after_its_own_deliveries(
    redis_client: aioredis.Redis,
) -> None:
    """30 entries with one body that always fails, between 30 that succeed: each failing
    entry is delivered exactly max-deliveries times (counts 1, 2, 3 by its own id) and
    dead-lettered once, with its reason; the breaker never sees a run of failures."""
    bodies = [b for i in range(30) for b in (b"same", f"ok-{i}".encode())]
    ids = await add(redis_client, *bodies)
    same_ids = [i for i, b in zip(ids, bodies, strict=True) if b == b"same"]
    async with (
        serving(ByBody(fail={b"same"})) as proc,
        consuming(redis_client, proc.url, max_deliveries=3),
    ):
        await until(settled(proc, redis_client, 30), "every entry settled", timeout_s=20)
    for entry_id in same_ids:
        assert proc.counts(entry_id) == [1, 2, 3], entry_id
    dead = await dead_letters(redis_client)
    assert sorted(d["dead-id"] for d in dead) == sorted(same_ids)
    assert {d["dead-deliveries"] for d in dead} == {"3"} and {d["dead-group"] for d in dead} == {G}
    assert all("HTTP 500" in d["dead-reason"] for d in dead)
    assert len(proc.accepted) == 30


async def test_a_processor_outage_charges_no_delivery(redis_client: aioredis.Redis) -> None:
    ids = await add(redis_client, *[f"m{i}".encode() for i in range(10)])
    port = free_port()
    url = f"http://127.0.0.1:{port}/process"
    async with consuming(redis_client, url, concurrency=2) as running:
        await until(lambda: running.worker.breaker.open, "the breaker opens")
        async with serving(ByBody(), port) as proc:
            await until(settled(proc, redis_client, 10), "all acked once it is back", 20)
    assert sorted(proc.accepted) == sorted(ids)
    assert {s.count for s in proc.seen} == {1}  # not one delivery charged by the outage
    assert await dead_letters(redis_client) == []


async def test_a_4xx_and_an_oversized_entry_are_dead_lettered_at_once(
    redis_client: aioredis.Redis,
) -> None:
    (big,) = await add(redis_client, b"x" * 2000)
    proc = ByBody()
    async with serving(proc), consuming(redis_client, proc.url, max_message_bytes=1000):
        await until(lambda: dead_letters_count(redis_client, 1), "dead-lettered")
    (dead,) = await dead_letters(redis_client)
    assert dead["dead-id"] == big and "over the limit" in dead["dead-reason"]
    assert proc.seen == [] and await pending(redis_client) == 0


async def dead_letters_count(redis: aioredis.Redis, n: int) -> bool:
    return int(await redis.xlen(f"{S}:dead")) >= n


async def test_drain_hands_held_entries_back_uncharged_to_the_next_consumer(
    redis_client: aioredis.Redis,
) -> None:
    """The controller's drain: stop taking, time out on two hung entries, hand them back,
    report drained; another consumer claims them at once, still at delivery 1."""
    ids = await add(redis_client, b"slow-1", b"slow-2", b"later")
    proc = ByBody(hang={b"slow-1", b"slow-2"})
    async with serving(proc):  # noqa: SIM117  (the processor's URL exists once it serves)
        async with consuming(redis_client, proc.url, concurrency=2, drain_timeout_s=0.3,
                             min_idle_s=60) as first:  # fmt: skip
            await until(lambda: len(proc.seen) == 2, "two entries held")
            assert await redisqueue.set_command(redis_client, "c1", Command.DRAIN)
            await until(lambda: first.worker.state is ConsumerState.DRAINED, "drained")
            summary: Any = await redis_client.xpending_range(S, G, "-", "+", 10)
            assert {p["message_id"].decode() for p in summary} == set(ids[:2])
            assert {p["times_delivered"] for p in summary} == {0}  # uncharged
            proc.released.set()
            async with consuming(redis_client, proc.url, "c2", min_idle_s=60):
                await until(settled(proc, redis_client, 3), "the second consumer took all")
    assert sorted(proc.accepted) == sorted(ids)
    assert proc.counts(ids[0])[-1] == 1 and proc.counts(ids[1])[-1] == 1


async def test_a_vanished_consumers_entries_are_claimed_after_min_idle_by_the_poison_rule(
    redis_client: aioredis.Redis,
) -> None:
    """Entries delivered to consumers that never settle them (they crashed) are claimed by
    a live one once idle for --claim-min-idle: the one entry a consumer held alone is the
    suspect, charged (delivery 2); two held together are not (delivery 1 again)."""
    ids = await add(redis_client, b"a", b"b", b"c")
    await streams.ensure_group(redis_client, streams.StreamKeys(S, G, "gone"))
    await redis_client.xreadgroup(G, "gone", {S: ">"}, count=2)
    await redis_client.xreadgroup(G, "gone-alone", {S: ">"}, count=1)
    async with serving(ByBody()) as proc, consuming(redis_client, proc.url, min_idle_s=0.3):
        await until(settled(proc, redis_client, 3), "claimed and acked")
    assert sorted(proc.accepted) == sorted(ids)
    assert [proc.counts(i) for i in ids] == [[1], [1], [2]]


async def test_held_entries_are_touched_so_a_slow_delivery_is_not_claimed(
    redis_client: aioredis.Redis,
) -> None:
    (entry,) = await add(redis_client, b"slow")
    proc = ByBody(hang={b"slow"})
    async with (
        serving(proc),
        consuming(redis_client, proc.url, "c1", min_idle_s=0.3),
        consuming(redis_client, proc.url, "c2", min_idle_s=0.3),
    ):
        await until(lambda: len(proc.seen) == 1, "held by one consumer")
        owner = proc.seen[0]
        # For three min-idle periods, every look at the PEL finds the entry recently touched
        # by its holder, at delivery 1, and the other consumer never got it.
        deadline = time.monotonic() + 3 * 0.3
        while time.monotonic() < deadline:
            (p,) = cast(list[dict[str, Any]], await redis_client.xpending_range(S, G, "-", "+", 1))
            assert p["time_since_delivered"] < 300 and p["times_delivered"] == 1
            assert proc.seen == [owner]
            await asyncio.sleep(0.02)
        proc.released.set()
        await until(settled(proc, redis_client, 1), "acked")
    assert proc.accepted == [entry]


def parser() -> argparse.ArgumentParser:
    built = argparse.ArgumentParser(prog="autoscaler")
    register(built.add_subparsers(dest="command", required=True))
    return built


def test_stream_flags_need_a_group_and_exclude_a_queue(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = parser().parse_args(["consume", "--stream", "s", "--group", "g", "--forward",
                                "http://h/p", "--id", "c1", "--claim-min-idle", "5"])  # fmt: skip
    assert settings_from_args(args).queue == "s" and args.claim_min_idle == 5.0
    alone = parser().parse_args(["consume", "--stream", "s", "--forward", "http://h/p"])
    with pytest.raises(InputError, match="--group"):
        settings_from_args(alone)
    with pytest.raises(SystemExit) as exited:
        parser().parse_args(["consume", "--stream", "s", "--queue", "q", "--forward", "http://h/p"])
    assert exited.value.code == 2 and "--queue" in capsys.readouterr().err


async def test_a_restart_under_the_same_id_takes_back_its_entries_at_once_uncharged(
    redis_client: aioredis.Redis,
) -> None:
    """A previous incarnation of c1 died holding two entries: the new c1 quarantines them
    on start and claims them without waiting --claim-min-idle (60 s here), one at a time,
    uncharged (delivery 1 again: either may be innocent)."""
    ids = await add(redis_client, b"a", b"b")
    await streams.ensure_group(redis_client, streams.StreamKeys(S, G, "c1"))
    await redis_client.xreadgroup(G, "c1", {S: ">"}, count=2)
    async with serving(ByBody()) as proc, consuming(redis_client, proc.url, "c1", min_idle_s=60):
        await until(settled(proc, redis_client, 2), "taken back and acked")
    assert sorted(proc.accepted) == sorted(ids)
    assert {s.count for s in proc.seen} == {1}
