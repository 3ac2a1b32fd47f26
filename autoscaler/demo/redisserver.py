"""A private ``redis-server`` for the demo: a free loopback port, no persistence, stopped last.

It runs in its own session, so a Ctrl-C in the terminal reaches only the demo, which
still needs Redis while the replicas drain; the demo stops it last. A demo killed
outright (SIGKILL) cannot stop it: the kernel does (``PR_SET_PDEATHSIG``, Linux).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from autoscaler.errors import InputError
from autoscaler.targets.local.proc import parent_death_signal

START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateRedis:
    def __init__(self, process: asyncio.subprocess.Process, port: int) -> None:
        self.process = process
        self.port = port

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    async def start(cls) -> PrivateRedis:
        binary = shutil.which("redis-server")
        if binary is None:
            raise InputError(
                "redis-server is not on PATH: install it (`make demo` does: apt-get install "
                "redis-server) or pass --redis-url"
            )
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            # a demo SIGKILLed (no ``stop``) takes its Redis with it, as it does its replicas
            preexec_fn=parent_death_signal(),
        )  # fmt: skip
        server = cls(process, port)
        try:
            await server._wait_ready()
        except BaseException:
            await server.stop()
            raise
        return server

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        client = Redis.from_url(self.url, socket_connect_timeout=0.5)
        try:
            while True:
                with contextlib.suppress(RedisError, OSError):
                    if await client.ping():
                        return
                if self.process.returncode is not None or time.monotonic() > deadline:
                    raise InputError(f"redis-server on port {self.port} did not start")
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    async def stop(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await asyncio.shield(self.process.wait())
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
        await self.process.wait()
