"""Cost of reading N stream triggers, next to the floor of N list triggers in the same run.

Run: ``.venv/bin/python bench/bench_stream_read.py [--sizes 100 1000 5000] [--cycles 5]``

Starts its own redis-server (``bench_redis_read.start_redis``). Per size N: N lists as
``bench_redis_read`` makes them (the floor: the read every cycle already pays), and N
streams with 20 entries, a group with 5 delivered (pending) and 15 undelivered (lag), two
registered consumers (one alive) and a processed counter; a tenth of the streams had an
undelivered entry deleted, so Redis answers a NULL lag and the script counts it. Reported
per path (``lists``, ``streams``, ``streams-null-lag`` — every stream with a NULL lag):
round trips, client CPU ms, wall ms, server CPU ms, and the longest single command's server
ms (the stall other clients see; the stream script is split in ``CHUNK_PAIRS``).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from autoscaler import keys
from autoscaler.policy.spec import RedisStreamTrigger, RedisTrigger
from autoscaler.redisconn import RedisCredentials, make_client
from autoscaler.sources.redis import RedisSource
from bench.bench_redis_read import CountingConnection, measure, populate, start_redis

ENTRIES, DELIVERED = 20, 5


def populate_streams(port: int, n: int, null_every: int) -> list[RedisStreamTrigger]:
    """N streams read by group ``g``; every ``null_every``-th one with a NULL lag."""
    client = redis.Redis(port=port)
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        stream = f"bench:s{i}"
        for j in range(ENTRIES):
            pipe.xadd(stream, {"body": f"m{j}"}, id=f"{j + 1}-0")
        pipe.xgroup_create(stream, "g", id="0")
        pipe.xreadgroup("g", f"w{i}a", {stream: ">"}, count=DELIVERED)
        if i % null_every == 0:
            pipe.xdel(stream, f"{ENTRIES - 1}-0")  # undelivered: Redis's lag turns NULL
        for c in ("a", "b"):
            pipe.sadd(keys.consumers_key(stream), f"w{i}{c}")
        pipe.set(keys.lease_key(f"w{i}a"), b"1")
        pipe.set(keys.processed_key(stream), i)
    pipe.execute()
    client.close()
    return [RedisStreamTrigger((f"bench:s{i}",), "g", 10) for i in range(n)]


async def bench_size(port: int, n: int, cycles: int) -> list[tuple[str, list[float]]]:
    url = f"redis://127.0.0.1:{port}/0"
    lists: list[RedisTrigger] = populate(port, n)  # flushes the server first
    rows = []
    for path in ("lists", "streams", "streams-null-lag"):
        triggers: list[RedisTrigger | RedisStreamTrigger] = []
        if path == "lists":
            triggers += lists
        else:
            triggers += populate_streams(port, n, null_every=10 if path == "streams" else 1)
        client = make_client(url, RedisCredentials.from_env({}),
                             connection_class=CountingConnection)  # fmt: skip
        source = RedisSource(url, client=client)
        readings = await source.read(triggers)
        assert all(r.value is not None for r in readings), readings[:3]
        if path != "lists":  # every stream: 15 lag (14 with a deleted entry) + 5 pending
            assert {r.value for r in readings} <= {19.0, 20.0}, {r.value for r in readings}
        rows.append((path, await measure(port, functools.partial(source.read, triggers), cycles)))
        await source.aclose()
        if path != "lists":
            redis.Redis(port=port).delete(*(f"bench:s{i}" for i in range(n)))
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 5000])
    parser.add_argument("--cycles", type=int, default=5)
    args = parser.parse_args()
    process, port = start_redis()
    try:
        print(f"{'N':>6} {'path':<17} {'trips':>5} {'client ms':>9} {'wall ms':>8} "
              f"{'server ms':>9} {'longest cmd ms':>14}")  # fmt: skip
        for n in args.sizes:
            for path, (trips, cpu, wall, server, longest) in await bench_size(port, n, args.cycles):
                print(f"{n:>6} {path:<17} {trips:>5.0f} {cpu:>9.1f} {wall:>8.1f} "
                      f"{server:>9.1f} {longest:>14.2f}")  # fmt: skip
    finally:
        process.kill()
        process.wait()


if __name__ == "__main__":
    asyncio.run(main())
