"""Shared fixtures: real Redis and Prometheus servers, and a guard against leaked tasks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from hypothesis import settings

from tests.servers import PrometheusServer, RedisServer, start_prometheus, start_redis

# Hypothesis' per-example deadline (200 ms) measures wall time: on a shared 2-core machine
# a parser example can take longer without being wrong. Properties are checked, not speed.
settings.register_profile("queue-autoscaler", deadline=None)
settings.load_profile("queue-autoscaler")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One redis-server for the session; tests isolate themselves with ``redis_url`` (FLUSHALL)."""
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    import redis

    if redis_server.process.poll() is not None:  # a test stopped it: bring it back
        redis_server.restart()
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A private redis-server for tests that stop and restart it."""
    server = start_redis()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def prometheus_server() -> Iterator[PrometheusServer]:
    """One prometheus for the session (its first sample takes ~5 s: start it once)."""
    server = start_prometheus()
    yield server
    server.stop()


def _running(pid: int) -> bool:
    """Running, not a zombie: ``returncode`` is set by the event loop, which a test that
    timed out no longer runs."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.fixture(autouse=True)
def _no_leaked_processes() -> Iterator[None]:
    """Fail a test that leaves its ``autoscaler`` processes running, and SIGKILL them: a
    sidecar left behind by a test that timed out would consume the next tests' messages from
    the shared Redis and fail them all (CI saw 26 such failures after one timeout)."""
    from tests.e2e import LIVE

    before = set(LIVE)
    yield
    left = sorted(p.pid for p in LIVE - before if p.returncode is None and _running(p.pid))
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if left:
        pytest.fail(f"test left {len(left)} process(es) running (SIGKILLed): pids {left}")


@pytest.fixture(autouse=True)
async def _no_leaked_tasks(_no_leaked_processes: None) -> AsyncIterator[None]:
    """Fail a test that leaves asyncio tasks running (kopf's ``_no_asyncio_pending_tasks``).
    Cancelled before the processes are checked: a test's ``finally`` may still stop them."""
    before = asyncio.all_tasks()
    yield
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    if leaked:
        for task in leaked:
            task.cancel()
        await asyncio.gather(*leaked, return_exceptions=True)
        names = ", ".join(sorted(t.get_name() for t in leaked))
        pytest.fail(f"test leaked {len(leaked)} asyncio task(s): {names}")
