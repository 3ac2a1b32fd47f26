"""The demo's producer: city names pushed to the queue like a pipeline job would.

Each message is JSON ``{"id": "m00042", "city": "Lagos", "enqueued_at": <epoch s>}``:
a unique id (so the summary can tell duplicates and losses), and the enqueue time (so
waits can be measured). Cities come from ``autoscaler/data/cities.txt`` (1,000 names),
cycled when more messages are asked for.

Patterns, over a span of ``max(10, messages / 20)`` seconds:

- ``burst``: three bursts (40 %, 35 %, 25 % of the messages) at 0, 40 % and 80 % of the
  span, each pushed within a second — a batch job submitted in parts;
- ``steady``: the same number every second;
- ``spiky``: a low steady trickle (30 %) with five short spikes (70 %) at fixed moments.

``python -m autoscaler.demo.producer --redis-url URL --queue Q --messages N --pattern P``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources

from redis.asyncio import Redis

from autoscaler.aio import guarded
from autoscaler.redisconn import make_client

PATTERNS = ("burst", "steady", "spiky")
RATE_PER_S = 20.0  # messages per second of span: a 1,000-message job spans 50 s


def load_cities() -> list[str]:
    text = (resources.files("autoscaler") / "data" / "cities.txt").read_text("utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def schedule(pattern: str, messages: int) -> list[tuple[int, int]]:
    """(second from start, messages pushed then), summing to ``messages``."""
    span = max(10, round(messages / RATE_PER_S))
    if pattern == "burst":
        shares = [(0, 0.40), (round(span * 0.4), 0.35), (round(span * 0.8), 0.25)]
    elif pattern == "steady":
        shares = [(t, 1 / span) for t in range(span)]
    elif pattern == "spiky":
        trickle = [(t, 0.3 / span) for t in range(span)]
        spikes = [(round(span * f), 0.14) for f in (0.05, 0.25, 0.45, 0.65, 0.85)]
        shares = trickle + spikes
    else:
        raise ValueError(f"unknown pattern {pattern!r}: one of {', '.join(PATTERNS)}")
    counts: dict[int, float] = {}
    for second, share in shares:
        counts[second] = counts.get(second, 0.0) + share * messages
    return _whole(sorted(counts.items()), messages)


def _whole(rows: list[tuple[int, float]], total: int) -> list[tuple[int, int]]:
    """Round the counts so they sum to ``total`` exactly (largest remainders win)."""
    floors = [(t, int(n)) for t, n in rows]
    short = total - sum(n for _, n in floors)
    order = sorted(range(len(rows)), key=lambda i: rows[i][1] - floors[i][1], reverse=True)
    for i in order[:short]:
        floors[i] = (floors[i][0], floors[i][1] + 1)
    return [(t, n) for t, n in floors if n > 0]


@dataclass
class Produced:
    """What was pushed: every id, and the count per second from the start (the trace)."""

    ids: list[str] = field(default_factory=list)
    per_second: dict[int, int] = field(default_factory=dict)
    started_at: float = 0.0  # epoch
    done: bool = False


async def produce(
    redis: Redis,
    queue: str,
    plan: list[tuple[int, int]],
    cities: list[str],
    out: Produced,
    *,
    clock: Callable[[], float] = time.time,
) -> Produced:
    """Push ``plan`` to ``queue`` (LPUSH: consumers take from the right), on time.

    Called again with the same ``out`` (``demo --forever``), it goes on numbering ids.
    """
    base = clock()
    out.started_at = out.started_at or base
    out.done = False
    for second, count in plan:
        delay = base + second - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        batch = []
        for _ in range(count):
            n = len(out.ids)
            message_id = f"m{n:05d}"
            city = cities[n % len(cities)]
            body = {"id": message_id, "city": city, "enqueued_at": round(clock(), 4)}
            batch.append(json.dumps(body))
            out.ids.append(message_id)
        await guarded(redis.lpush(queue, *batch))  # the demo cancels its producer: keep it
        at = int(clock() - out.started_at)
        out.per_second[at] = out.per_second.get(at, 0) + count
    out.done = True
    return out


async def _main(args: argparse.Namespace) -> int:
    redis = make_client(args.redis_url)
    try:
        out = await produce(
            redis, args.queue, schedule(args.pattern, args.messages), load_cities(), Produced()
        )
    finally:
        await redis.aclose()
    print(f"pushed {len(out.ids)} messages to {args.queue}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m autoscaler.demo.producer")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--queue", default="demo:cities")
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--pattern", choices=PATTERNS, default="burst")
    return asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
