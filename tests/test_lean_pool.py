"""``make_client(lean_pool=True)`` (the sidecar's pool): the same limits and waiting as
redis-py's ``BlockingConnectionPool``, without its lock and timer per command.

Against a real redis-server: connections are held by blocking commands (``BLPOP``), the
server's ``CLIENT LIST`` counts what the pool opened.
"""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from autoscaler.redisconn import LeanPool, RedisCredentials, make_client
from tests.e2e import eventually

NAME = "lean-pool-test"


def _lean(url: str, max_connections: int, wait_s: float = 5.0) -> aioredis.Redis:
    return make_client(url, RedisCredentials.from_env({}), connect_timeout_s=wait_s,
                       read_timeout_s=None, max_connections=max_connections, lean_pool=True,
                       client_name=NAME)  # fmt: skip


async def _opened(admin: aioredis.Redis) -> int:
    """Connections the lean client has open on the server."""
    return sum(1 for c in await admin.client_list() if c.get("name") == NAME)


async def test_past_its_ceiling_callers_wait_and_get_connections_in_arrival_order(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    client = _lean(redis_url, max_connections=2)
    done: list[int] = []

    async def pop(i: int) -> None:
        await client.blpop([f"k{i}"], 0)
        done.append(i)

    async def blocked(finished: int) -> bool:
        """Both connections blocked in a BLPOP, after ``finished`` pops returned."""
        clients = await redis_client.info("clients")
        return clients["blocked_clients"] == 2 and len(done) == finished

    tasks = [asyncio.create_task(pop(i)) for i in range(6)]  # 0, 1 connect; 2–5 wait
    try:
        await eventually(lambda: blocked(0), 10, "0 and 1 blocked")
        await redis_client.lpush("k5", 1)  # the last to arrive would return at once …
        await redis_client.lpush("k4", 1)  # … if it were handed a connection before 2 and 3
        await redis_client.lpush("k0", 1)
        await eventually(lambda: blocked(1), 10, "0 returned, its connection handed on")
        assert done == [0]  # handed to 2, now blocked on k2: not to 4 or 5
        await redis_client.lpush("k1", 1)
        await eventually(lambda: blocked(2), 10, "1 returned, its connection handed on")
        assert done == [0, 1]  # 3 is blocked on k3
        await redis_client.lpush("k2", 1)
        await redis_client.lpush("k3", 1)
        async with asyncio.timeout(10):
            await asyncio.gather(*tasks)
        assert await _opened(redis_client) == 2
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.aclose()
    assert sorted(done) == list(range(6))


async def test_a_wait_past_the_timeout_is_no_connection_available_and_leaks_nothing(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    client = _lean(redis_url, max_connections=1, wait_s=0.2)
    holder = asyncio.create_task(client.blpop(["held"], 0))
    try:

        async def blocked() -> bool:
            return bool((await redis_client.info("clients"))["blocked_clients"])

        await eventually(blocked, 10, "the BLPOP holding the only connection")
        with pytest.raises(redis.exceptions.ConnectionError, match="No connection available"):
            await client.get("other")
        await redis_client.lpush("held", 1)
        async with asyncio.timeout(10):
            await holder
        # The timed-out waiter did not take the released connection with it.
        assert await client.set("after", 1)
        assert await _opened(redis_client) == 1
    finally:
        holder.cancel()
        await asyncio.gather(holder, return_exceptions=True)
        await client.aclose()


async def test_a_waiter_cancelled_as_it_is_handed_a_connection_gives_it_back(
    redis_url: str,
) -> None:
    pool = LeanPool.from_url(redis_url, max_connections=1, timeout=5.0)
    try:
        held = await pool.get_connection()
        waiter = asyncio.create_task(pool.get_connection())
        await asyncio.sleep(0)  # one loop step: the task is now waiting for a connection
        await pool.release(held)  # handed straight to the waiter (nothing awaited) …
        waiter.cancel()  # … which is cancelled before it runs again
        await asyncio.gather(waiter, return_exceptions=True)
        assert waiter.cancelled()
        async with asyncio.timeout(10):
            again = await pool.get_connection()
        assert again is held  # back in the pool, not lost with the cancelled waiter
        await pool.release(again)
    finally:
        await pool.aclose()


async def test_a_connection_the_server_closed_is_replaced_before_use(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    client = _lean(redis_url, max_connections=2)
    try:
        await client.set("k", "v")
        killed = await redis_client.client_kill_filter(_type="normal", skipme=True)
        assert killed >= 1
        assert await client.get("k") == b"v"
    finally:
        await client.aclose()
