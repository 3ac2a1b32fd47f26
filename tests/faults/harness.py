"""The fault matrix's rig: a Redis we can kill, stop and restart, real ``autoscaler consume``
processes, a recording processor that counts messages by id, and the product's reaper.

Every scenario produces numbered messages (``{"id": n}``), injects one fault, waits (poll
with a deadline) until every id was accepted by the processor or sits in the dead-letter
list, and reports one row: produced, processed, duplicated, lost, dead-lettered, and the
recovery time (from the end of the fault to the last id settled).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import tempfile
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions as rexc
from aiohttp import web
from prometheus_client import CollectorRegistry
from redis.asyncio.retry import Retry
from redis.backoff import ConstantBackoff

from autoscaler import keys
from autoscaler.drain import Reaper
from autoscaler.metrics import ControllerMetrics
from tests.e2e import Proc, eventually
from tests.servers import free_port, wait_until

Q = "jobs"
ROWS: list[dict[str, Any]] = []  # one per scenario, printed at the end of the session


def message(n: int, size: int = 0, **extra: object) -> bytes:
    """Message ``n``: ``{"id": n}``, padded to about ``size`` bytes, with ``extra`` keys
    (``hang=True``, ``poison=True``: see ``Recorder``)."""
    body: dict[str, object] = {"id": n, **extra}
    if size:
        body["pad"] = "x" * max(0, size - 20)
    return json.dumps(body).encode()


def ident(body: bytes) -> int:
    return int(json.loads(body)["id"])


class DurableRedis:
    """redis-server with AOF ``appendfsync always`` in a directory of its own, on a fixed
    port: SIGKILL and restart keep every acknowledged write."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="qa-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed: run `make test`"
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

        def answers() -> bool:
            import redis

            with contextlib.suppress(redis.RedisError):
                return bool(redis.Redis(port=self.port, socket_timeout=0.5).ping())
            return False

        wait_until(answers, 10, f"redis-server on {self.port}")

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        if sig == signal.SIGKILL:
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Recorder:
    """The user's processor: POST /process, records accepted bodies by id.

    ``mode``: "ok", "500" (answers 500 to everything). Per message: a body with
    ``"hang": true`` never answers; ``"poison": true`` calls ``on_poison`` with the
    consumer id (which SIGKILLs that sidecar) and never answers; ``"sleep": s`` answers
    after ``s`` seconds.
    """

    port: int = 0
    mode: str = "ok"
    latency_s: float = 0.0
    accepted: Counter[int] = field(default_factory=Counter)
    on_poison: Callable[[str], None] = lambda _consumer: None
    _runner: web.AppRunner | None = None
    _release: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/process"

    async def start(self) -> None:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/process", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._release = asyncio.Event()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        parsed = json.loads(body)
        if parsed.get("poison"):
            self.on_poison(request.headers["X-Consumer-Id"])
            await self._release.wait()
        if parsed.get("hang"):
            await self._release.wait()
        if parsed.get("sleep"):
            await asyncio.sleep(float(parsed["sleep"]))
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        if self.mode == "500":
            return web.Response(status=500, text="broken")
        if request.transport is not None and not request.transport.is_closing():
            self.accepted[parsed["id"]] += 1
        return web.Response(text="ok")


@dataclass
class Rig:
    redis_url: str
    redis: aioredis.Redis
    recorder: Recorder
    tmp: Path
    consumers: dict[str, Proc] = field(default_factory=dict)
    flags: tuple[str, ...] = ()
    restarts: int = 0

    async def start_consumer(self, cid: str) -> Proc:
        proc = await Proc.start(
            self.tmp / f"{cid}-{self.restarts}.log", "consume", "--redis-url", self.redis_url,
            "--queue", Q, "--forward", self.recorder.url, "--id", cid,
            "--heartbeat-interval", "0.2", "--log-format", "json", "--retry-backoff", "0.05",
            "--retry-max-backoff", "0.5", *self.flags,
        )  # fmt: skip
        self.consumers[cid] = proc
        return proc

    def kill(self, cid: str) -> None:
        proc = self.consumers.get(cid)
        if proc is not None and proc.process.returncode is None:
            proc.process.send_signal(signal.SIGKILL)

    async def supervise(self, halted: asyncio.Event) -> None:
        """A kubelet: restart a sidecar that died, under the same id."""
        while not halted.is_set():
            for cid, proc in list(self.consumers.items()):
                if proc.process.returncode is not None:
                    self.restarts += 1
                    await self.start_consumer(cid)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.1):
                    await halted.wait()

    async def reap(self, halted: asyncio.Event) -> None:
        """The controller's reaper, every 0.5 s."""
        reaper = Reaper(lambda _url: self.redis, ControllerMetrics(CollectorRegistry()))
        while not halted.is_set():
            with contextlib.suppress(Exception):
                await reaper.reap(None, [Q])
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await halted.wait()

    async def consuming(self) -> None:
        def started() -> bool:
            return all(b'"consuming' in p.log.read_bytes() for p in self.consumers.values())

        await eventually(started, 30, "every sidecar consuming", tuple(self.consumers.values()))

    async def dead(self) -> list[bytes]:
        return list(await self.redis.lrange(keys.dead_letter_key(Q), 0, -1))

    async def settled(self, ids: set[int], timeout_s: float) -> float:
        async def check() -> bool:
            dead = {ident(m) for m in await self.dead()}
            return ids <= set(self.recorder.accepted) | dead

        return await eventually(check, timeout_s, "every id processed or dead-lettered",
                                tuple(self.consumers.values()))  # fmt: skip

    async def stranded(self) -> int:
        """Messages left in processing lists or the quarantine once everything settled."""
        total = int(await self.redis.llen(keys.quarantine_key(Q)))
        async for key in self.redis.scan_iter(match=keys.processing_prefix(Q) + "*"):
            total += int(await self.redis.llen(key))
        return total

    def procs(self) -> tuple[Proc, ...]:
        return tuple(self.consumers.values())

    async def stop_all(self) -> list[int]:
        for proc in self.consumers.values():
            if proc.process.returncode is None:
                proc.process.send_signal(signal.SIGCONT)
        return [await p.stop() for p in self.consumers.values()]


@contextlib.asynccontextmanager
async def rig(
    redis_url: str, tmp: Path, consumers: int, *flags: str, recorder: Recorder | None = None
) -> AsyncIterator[Rig]:
    recorder = recorder or Recorder()
    await recorder.start()
    # The test's own client rides out a Redis restart: 50 retries 0.1 s apart.
    retry = Retry(ConstantBackoff(0.1), 50)
    client = aioredis.Redis.from_url(
        redis_url, retry=retry, retry_on_error=[rexc.ConnectionError, rexc.TimeoutError]
    )
    r = Rig(redis_url, client, recorder, tmp, flags=flags)
    halted = asyncio.Event()
    background: list[asyncio.Task[None]] = []
    try:
        for i in range(consumers):
            await r.start_consumer(f"c{i}")
        background = [asyncio.create_task(r.supervise(halted), name="supervise"),
                      asyncio.create_task(r.reap(halted), name="reap")]  # fmt: skip
        await r.consuming()
        yield r
    finally:
        halted.set()
        await asyncio.gather(*background, return_exceptions=True)
        with contextlib.suppress(AssertionError):
            await r.stop_all()
        for proc in r.consumers.values():
            if proc.process.returncode is None:
                proc.process.kill()
                await proc.process.wait()
        await client.aclose()
        await recorder.stop()


def report(
    name: str, r: Rig, ids: set[int], dead: list[bytes], recovery_s: float
) -> dict[str, Any]:
    dead_ids = {ident(m) for m in dead}
    return account(name, r.recorder, ids, dead_ids, recovery_s, r.restarts)


def account(
    name: str, recorder: Recorder, ids: set[int], dead: set[int], recovery_s: float, restarts: int
) -> dict[str, Any]:
    """The fault matrix's row, counted by message id: what was produced, accepted by the
    processor (once or more), dead-lettered, and lost (none of those)."""
    accepted = recorder.accepted
    row = {
        "fault": name,
        "produced": len(ids),
        "processed": len(set(accepted) & ids),
        "duplicated": sum(accepted.values()) - len(set(accepted)),
        "lost": len(ids - set(accepted) - dead),
        "dead_lettered": len(dead),
        "recovery_s": round(recovery_s, 1),
        "restarts": restarts,
    }
    ROWS.append(row)
    print(f"FAULT {json.dumps(row)}")
    return row

