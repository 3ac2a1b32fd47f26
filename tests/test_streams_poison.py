"""A poison stream entry that SIGKILLs its consumer, held beside innocent ones.

Two ``autoscaler consume --stream`` processes at ``--concurrency 4``; the processor kills
the sidecar that POSTs the poison body (SIGKILL, from the request's path) and answers the
others 200 after a short latency; the poison's first request waits until an innocent one
from its sidecar is in flight, so the first crash happens beside innocent entries. A killed
sidecar is restarted, alternately under the same id (its start judges what it held) and a
new one (a live sidecar's claim judges it). The poison rule of ``redisqueue.streams``: only
the poison entry is dead-lettered, every innocent id is processed, none is charged for the
crashes, and the poison is delivered alone after the first crash. Entries are counted by id.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp import web

from autoscaler.redisqueue import streams

S, G = "jobs", "workers"
MAX_DELIVERIES = 3
POISON = b"poison"


@dataclass
class Sidecar:
    name: str  # the processor path it posts to
    consumer_id: str
    process: asyncio.subprocess.Process
    log: Path


@dataclass
class Killer:
    """The processor: POISON kills the sidecar posting it; the rest succeed."""

    sidecars: dict[str, Sidecar] = field(default_factory=dict)
    in_flight: dict[str, set[str]] = field(default_factory=dict)  # path → entry ids
    poison_seen: list[tuple[int, set[str]]] = field(default_factory=list)  # (count, beside)
    accepted: set[str] = field(default_factory=set)
    busy: dict[str, asyncio.Event] = field(default_factory=dict)  # path → an innocent was held
    counts: dict[str, list[int]] = field(default_factory=dict)
    port: int = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        entry_id = request.headers["X-Stream-Entry-Id"]
        count = int(request.headers["X-Delivery-Count"])
        self.counts.setdefault(entry_id, []).append(count)
        body = await request.read()
        held = self.in_flight.setdefault(name, set())
        if body == POISON:
            if not self.poison_seen:
                # The sidecar POSTs what it took concurrently, so the poison's request can
                # arrive before its neighbours': the first one waits until one is in flight.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.busy.setdefault(name, asyncio.Event()).wait(), 10)
            self.poison_seen.append((count, set(held)))
            self.sidecars[name].process.send_signal(signal.SIGKILL)
            return web.Response(status=200)  # never read: the sidecar is dead
        held.add(entry_id)
        self.busy.setdefault(name, asyncio.Event()).set()
        try:
            await asyncio.sleep(0.3)  # the processor's latency (not a synchronisation)
        finally:
            held.discard(entry_id)
        if request.transport is not None and not request.transport.is_closing():
            self.accepted.add(entry_id)
        return web.Response(text="ok")


async def start(redis_url: str, port: int, name: str, consumer_id: str, tmp: Path) -> Sidecar:
    log = tmp / f"{consumer_id}-{time.monotonic_ns()}.log"
    args = ["-m", "autoscaler", "consume", "--redis-url", redis_url, "--stream", S, "--group", G,
            "--forward", f"http://127.0.0.1:{port}/process/{name}", "--id", consumer_id,
            "--concurrency", "4", "--heartbeat-interval", "0.2", "--claim-min-idle", "1",
            "--max-deliveries", str(MAX_DELIVERIES)]  # fmt: skip
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, *args, stdout=asyncio.subprocess.DEVNULL, stderr=stderr
        )
    return Sidecar(name, consumer_id, process, log)


@pytest.mark.timeout(180)
async def test_a_poison_entry_is_dead_lettered_alone_and_its_neighbours_processed(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    bodies = [f"innocent-{i:02d}".encode() for i in range(3)] + [POISON]
    bodies += [f"innocent-{i:02d}".encode() for i in range(3, 16)]
    added = [await redis_client.xadd(S, {"body": b}) for b in bodies]
    ids = [i.decode() if isinstance(i, bytes) else i for i in added]
    poison_id, innocent = ids[3], set(ids) - {ids[3]}
    await streams.ensure_group(redis_client, streams.StreamKeys(S, G, "setup"))
    killer = Killer()
    app = web.Application()
    app.router.add_post("/process/{name}", killer.handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    restarts = 0
    try:
        for name in ("a", "b"):
            killer.sidecars[name] = await start(redis_url, port, name, f"pod-{name}", tmp_path)
        deadline = time.monotonic() + 120
        while True:
            dead = await streams.read_range(redis_client, f"{S}:dead")
            if dead and innocent <= killer.accepted:
                break
            logs = [s.log.read_text()[-1500:] for s in killer.sidecars.values()]
            assert time.monotonic() < deadline, f"{killer.poison_seen} {logs}"
            for name, sidecar in list(killer.sidecars.items()):
                if sidecar.process.returncode is not None:  # killed by the poison: restart
                    restarts += 1
                    same = restarts % 2 == 1
                    new_id = sidecar.consumer_id if same else f"pod-{name}-{restarts}"
                    killer.sidecars[name] = await start(redis_url, port, name, new_id, tmp_path)
            await asyncio.sleep(0.05)
    finally:
        for sidecar in killer.sidecars.values():
            if sidecar.process.returncode is None:
                sidecar.process.send_signal(signal.SIGTERM)
        for sidecar in killer.sidecars.values():
            try:
                async with asyncio.timeout(15):
                    await sidecar.process.wait()
            except TimeoutError:
                sidecar.process.kill()
                await sidecar.process.wait()
        await runner.cleanup()
    (only,) = dead
    ours = streams.dead_letter_fields(only[1])[0]
    print(f"\npoison: {len(killer.poison_seen)} deliveries (count, beside): "
          f"{killer.poison_seen}; {restarts} restarts; innocent counts "
          f"{sorted({c for i in innocent for c in killer.counts[i]})}")  # fmt: skip
    assert ours["dead-id"] == poison_id
    assert innocent <= killer.accepted
    # The first crash had innocent entries in flight beside the poison; nobody was charged
    # for it, and every later delivery of the poison was alone.
    (first_count, first_beside), *later = killer.poison_seen
    assert first_count == 1 and first_beside
    assert all(not beside for _, beside in later)
    assert [c for c, _ in later] == list(range(1, MAX_DELIVERIES + 1))
    assert all(set(killer.counts[i]) == {1} for i in innocent)


async def quarantined(redis: aioredis.Redis, k: streams.StreamKeys) -> set[str]:
    members: set[bytes] = await redis.smembers(k.quarantine)  # type: ignore[assignment]
    return {m.decode() for m in members}


async def test_the_judgement_is_idempotent_and_suspects_go_alone_to_an_empty_consumer(
    redis_client: aioredis.Redis,
) -> None:
    """The scripts alone: a consumer gone holding two entries is judged once (a retried
    judgement finds nothing), neither is charged; a consumer holding an entry is told to
    wait, an empty one gets one suspect, and its retried claim gets nothing more."""
    added = [await redis_client.xadd(S, {"body": b"e%d" % i}) for i in range(3)]
    ids = [i.decode() if isinstance(i, bytes) else i for i in added]
    gone, busy, free = (streams.StreamKeys(S, G, c) for c in ("gone", "busy", "free"))
    await streams.ensure_group(redis_client, gone)
    await redis_client.xreadgroup(G, "gone", {S: ">"}, count=2)
    await redis_client.xreadgroup(G, "busy", {S: ">"}, count=1)
    assert await streams.recover(redis_client, gone) == 2  # as its restart would
    assert await streams.recover(redis_client, gone) == 0  # the retry: nothing left
    assert await quarantined(redis_client, gone) == set(ids[:2])
    pel: Any = await redis_client.xpending_range(S, G, "-", "+", 10)
    assert {p["message_id"].decode(): p["times_delivered"] for p in pel} == dict.fromkeys(ids, 1)
    verdict, _, entry = await streams.claim(redis_client, busy, 60_000, "-")
    assert (verdict, entry) == (streams.Claimed.WAIT, None)
    verdict, _, entry = await streams.claim(redis_client, free, 60_000, "-")
    assert verdict is streams.Claimed.ALONE and entry is not None
    assert entry.entry_id in ids[:2] and entry.count == 1  # several held: uncharged
    verdict, _, again = await streams.claim(redis_client, free, 60_000, "-")
    assert (verdict, again) == (streams.Claimed.WAIT, None)  # holds one: nothing more
    assert await quarantined(redis_client, gone) == set(ids[:2]) - {entry.entry_id}
