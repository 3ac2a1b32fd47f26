"""The local controller (``autoscaler run --local``) SIGKILLed: its replicas, real
``autoscaler consume`` sidecars, die with it (the kernel's parent-death signal); a
restarted controller stops whatever is left, names its consumers anew, finishes the work
and leaves no drain behind. Messages are counted by id at the recording processor.

Replica processes are found by their command line (``consume`` against this test's Redis
port), so "no two live consumers share an id" is checked on the processes themselves,
not only on the registry, which holds one entry per id.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from autoscaler import keys
from autoscaler.keys import Command
from autoscaler.redisqueue.registry import read_registry
from tests.e2e import Proc, eventually
from tests.faults.harness import DurableRedis, Q, Recorder, account, message

pytestmark = pytest.mark.timeout(150)


def consumer_processes(port: int) -> dict[int, str]:
    """Live ``autoscaler consume`` processes of this Redis, by pid → their ``--id``."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except (OSError, IndexError):
            continue
        url = f"redis://127.0.0.1:{port}/0".encode()
        if state != "Z" and b"consume" in argv and url in argv and b"--id" in argv:
            found[int(entry.name)] = argv[argv.index(b"--id") + 1].decode()
    return found


@dataclass
class LocalRig:
    """A ``run --local`` controller over sidecars that forward to ``recorder``."""

    redis: aioredis.Redis
    redis_port: int
    recorder: Recorder
    path: Path
    tmp: Path
    url: str
    controllers: list[Proc]

    async def start_controller(self) -> Proc:
        proc = await Proc.start(
            self.tmp / f"controller-{len(self.controllers)}.log", "run", "--local",
            str(self.path), "--redis-url", self.url, "--metrics-port", "0",
            "--log-format", "json",
        )  # fmt: skip
        self.controllers.append(proc)
        return proc

    def consumers(self) -> dict[int, str]:
        return consumer_processes(self.redis_port)

    async def live_ids(self) -> list[str]:
        return sorted(c.consumer_id for c in await read_registry(self.redis, Q) if c.lease_alive)

    async def told_to_drain(self) -> list[str]:
        entries = await read_registry(self.redis, Q)
        return sorted(c.consumer_id for c in entries if c.command is Command.DRAIN)

    async def drain_waiting(self) -> bool:
        """A consumer told to drain still holds messages: its drain is waiting."""
        entries = await read_registry(self.redis, Q)
        return any(c.command is Command.DRAIN and (c.in_flight or 0) > 0 for c in entries)

    async def dead(self) -> set[int]:
        raw = await self.redis.lrange(keys.dead_letter_key(Q), 0, -1)
        return {int(json.loads(m)["id"]) for m in raw}

    async def settled(self, ids: set[int], timeout_s: float) -> float:
        async def check() -> bool:
            return ids <= set(self.recorder.accepted) | await self.dead()

        return await eventually(check, timeout_s, "every id processed", tuple(self.controllers))

    async def quiet(self) -> None:
        """Nothing held: every processing list (dead consumers' too: reaped) and the
        quarantine empty."""

        async def empty() -> bool:
            total = int(await self.redis.llen(keys.quarantine_key(Q)))
            async for key in self.redis.scan_iter(match=keys.processing_prefix(Q) + "*"):
                total += int(await self.redis.llen(key))
            return total == 0

        await eventually(empty, 30, "processing lists and quarantine empty",
                         tuple(self.controllers))  # fmt: skip


def local_file(
    path: Path, recorder_url: str, sidecar_flags: tuple[str, ...] = (), /, **spec: str
) -> None:
    sidecar = [
        sys.executable, "-m", "autoscaler", "consume", "--redis-url", "{redis_url}",
        "--queue", "{queue}", "--id", "{replica_id}", "--forward", recorder_url,
        "--heartbeat-interval", "0.2", "--log-format", "json", "--retry-backoff", "0.05",
        "--concurrency", "2", "--drain-timeout", "30", *sidecar_flags,
    ]  # fmt: skip
    workload: dict[str, Any] = {
        "name": "workers", "redis-list": Q, "polling-interval": "200ms", "cooldown": "0",
        "scale-up-max-pods": "4", **spec, "command": sidecar,
    }  # fmt: skip
    path.write_text(json.dumps([workload]))  # JSON is YAML


@contextlib.asynccontextmanager
async def local_rig(
    durable: DurableRedis, tmp: Path, sidecar_flags: tuple[str, ...] = (), /, **spec: str
) -> AsyncIterator[LocalRig]:
    recorder = Recorder(latency_s=0.02)
    await recorder.start()
    client = aioredis.Redis.from_url(durable.url)
    path = tmp / "workers.yaml"
    local_file(path, recorder.url, sidecar_flags, **spec)
    r = LocalRig(client, durable.port, recorder, path, tmp, durable.url, [])
    try:
        yield r
    finally:
        for proc in r.controllers:
            if proc.process.returncode is None:
                await proc.stop()
        for pid in r.consumers():  # none, unless the test failed: never leave one behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        await client.aclose()
        await recorder.stop()


def row(name: str, r: LocalRig, ids: set[int], dead: set[int], recovery_s: float) -> dict[str, Any]:
    return account(name, r.recorder, ids, dead, recovery_s, restarts=0)


async def produce(r: LocalRig, ids: range, **extra: object) -> set[int]:
    await r.redis.lpush(Q, *[message(i, 0, **extra) for i in ids])
    return set(ids)


async def test_local_controller_sigkilled_holding_replicas(
    durable: DurableRedis, tmp_path: Path
) -> None:
    """SIGKILL ``run --local`` while its replicas hold messages: every replica exits by
    itself; a restart runs consumers under new ids only, and every id is processed."""
    spec = {"messages-per-replica": "100", "min-replicas": "2", "max-replicas": "3",
            "drain": "false"}  # fmt: skip
    async with local_rig(durable, tmp_path, **spec) as r:
        first = await r.start_controller()
        ids = await produce(r, range(600))
        await eventually(lambda: r.recorder.accepted.total() >= 100, 30, "100 accepted", (first,))
        old = r.consumers()
        assert len(old) >= 2, old
        first.process.send_signal(signal.SIGKILL)
        await first.process.wait()
        # The fault's first promise: the replicas do not outlive their controller.
        exit_s = await eventually(lambda: not set(old) & set(r.consumers()), 15,
                                  "the dead controller's replicas exited")  # fmt: skip
        second = await r.start_controller()
        recovery = await r.settled(ids, 60)
        await r.quiet()
        now = r.consumers()
        assert len(set(now.values())) == len(now), now  # no two live consumers share an id
        assert not set(now.values()) & set(old.values()), (old, now)  # new ids only
        assert set(await r.live_ids()) <= set(now.values())
        result = row("local controller SIGKILLed holding replicas", r, ids, await r.dead(),
                     recovery)  # fmt: skip
        assert result["lost"] == 0 and result["dead_lettered"] == 0, result
        assert await second.stop() == 0
        assert r.consumers() == {}
        print(f"replicas exited {exit_s:.1f} s after the SIGKILL")


async def test_local_controller_sigkilled_mid_drain(durable: DurableRedis, tmp_path: Path) -> None:
    """SIGKILL ``run --local`` while its drain waits for victims that hold slow messages;
    restart it: every id processed, no consumer left told to drain."""
    spec = {
        "messages-per-replica": "2", "min-replicas": "1", "max-replicas": "3",
        "count-in-flight": "false", "scale-down-stabilization": "3s", "drain": "true",
        "drain-timeout": "60s",
    }  # fmt: skip
    async with local_rig(durable, tmp_path, **spec) as r:
        first = await r.start_controller()
        ids = await produce(r, range(60))
        await eventually(lambda: len(r.consumers()) == 3, 30, "3 replicas", (first,))
        await r.settled(ids, 30)
        # Every slot (3 replicas × 2) is idle now and the scale-down is held back by the
        # stabilization window: six 8 s messages land one per slot, so each replica the
        # drain picks holds messages and the drain must wait for them.
        ids |= await produce(r, range(60, 66), sleep=8)
        await eventually(r.drain_waiting, 30, "a drain waiting for held messages", (first,))
        first.process.send_signal(signal.SIGKILL)
        await first.process.wait()
        killed = time.monotonic()
        await r.start_controller()
        recovery = await r.settled(ids, 60)

        async def released() -> bool:
            return not await r.told_to_drain()

        await eventually(released, 30, "no consumer left told to drain", tuple(r.controllers))
        await r.quiet()
        now = r.consumers()
        assert len(set(now.values())) == len(now), now
        result = row("local controller SIGKILLed mid-drain", r, ids, await r.dead(), recovery)
        assert result["lost"] == 0 and result["dead_lettered"] == 0, result
        print(f"recovered {time.monotonic() - killed:.1f} s after the SIGKILL")


async def test_redis_sigstopped_with_a_drain_in_progress(
    durable: DurableRedis, tmp_path: Path
) -> None:
    """SIGSTOP Redis while the controller's drain waits for victims holding slow messages,
    for 4 s: past the sidecars' reply timeout (``--redis-timeout 1.5``) and the controller's
    (2 s). Afterwards every id is processed, the drain is completed or released (no consumer
    left told to drain), nothing is held, and the controller and every remaining sidecar
    run on without a restart."""
    spec = {
        "messages-per-replica": "2", "min-replicas": "1", "max-replicas": "3",
        "count-in-flight": "false", "scale-down-stabilization": "3s", "drain": "true",
        "drain-timeout": "60s",
    }  # fmt: skip
    flags = ("--redis-timeout", "1.5", "--reconcile-interval", "2")
    async with local_rig(durable, tmp_path, flags, **spec) as r:
        controller = await r.start_controller()
        ids = await produce(r, range(60))
        await eventually(lambda: len(r.consumers()) == 3, 30, "3 replicas", (controller,))
        await r.settled(ids, 30)
        ids |= await produce(r, range(60, 66), sleep=10)  # one per slot, held past the stall
        await eventually(r.drain_waiting, 30, "a drain waiting for held messages", (controller,))
        before = r.consumers()
        durable.signal(signal.SIGSTOP)
        await asyncio.sleep(4.0)  # the fault itself: a stall past both reply timeouts
        durable.signal(signal.SIGCONT)
        ended = time.monotonic()
        await r.settled(ids, 60)

        async def released() -> bool:
            return not await r.told_to_drain()

        await eventually(released, 30, "no consumer left told to drain", (controller,))
        await r.quiet()
        recovery = time.monotonic() - ended  # every id settled, the drain over, nothing held
        assert controller.process.returncode is None  # the controller rode the stall out

        async def only_live_processes() -> bool:
            """The drained victims have exited; each sidecar left holds a live lease."""
            return sorted(r.consumers().values()) == await r.live_ids()

        await eventually(only_live_processes, 30, "each sidecar left live", (controller,))
        now = r.consumers()
        assert set(now) <= set(before), (before, now)  # survivors kept their process
        result = row("Redis SIGSTOP 4 s with a drain in progress (reply timeouts 1.5/2 s)",
                     r, ids, await r.dead(), recovery)  # fmt: skip
        assert result["lost"] == 0 and result["dead_lettered"] == 0, result
        assert await controller.stop() == 0
