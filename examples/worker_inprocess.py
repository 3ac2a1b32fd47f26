"""An in-process worker: takes jobs from a Redis list itself, no sidecar (docs/worker.md).

Each message is a job, either JSON ``{"id": "job-1", "seconds": 0.5}`` or any text (then
it takes ``--seconds``). The "work" is a sleep; the result is one line on stdout,
``done <id> <deliveries>``, written before the ack (at-least-once: a crash in between
prints it twice, never zero times). A job longer than ``--protect-over`` seconds asks
for scale-in protection while it runs, so a scale-down removes another pod instead.

Run it against any Redis, e.g. the demo's (``autoscaler demo --redis-url …``) or a
local one::

    redis-server --port 6379 &
    python examples/worker_inprocess.py --redis-url redis://127.0.0.1:6379/0 --queue jobs
    redis-cli LPUSH jobs '{"id": "a", "seconds": 2}' hello

SIGTERM (or Ctrl-C) drains: no new job starts, running ones finish (up to
``--drain-timeout``), the rest go back to the queue; a second SIGTERM stops at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys

from autoscaler.errors import AutoscalerError
from autoscaler.worker import Message, Worker


def job_of(body: bytes, default_s: float) -> tuple[str, float]:
    """(id, seconds) of a job; a body that is not a JSON job is its own id."""
    try:
        job = json.loads(body)
        return str(job["id"]), float(job.get("seconds", default_s))
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace")[:80], default_s


class Protection:
    """Protected from scale-in while at least one long job runs."""

    def __init__(self, worker: Worker) -> None:
        self.worker, self.long_jobs = worker, 0

    async def start(self, seconds: float) -> None:
        self.long_jobs += 1
        # Twice the expected time: protection must outlast the job, and ends by itself
        # if this process dies (the controller never waits longer than this).
        await self.worker.protect(min(172_800, max(60, 2 * seconds)))

    async def end(self) -> None:
        self.long_jobs -= 1
        if self.long_jobs == 0:
            await self.worker.protect(0)


async def process(message: Message, args: argparse.Namespace, protection: Protection) -> None:
    async with message:  # an exception nacks it: retried, dead-lettered after 5 deliveries
        job_id, seconds = job_of(message.body, args.seconds)
        long_job = seconds > args.protect_over
        if long_job:
            await protection.start(seconds)
        try:
            await asyncio.sleep(seconds)  # the work
            print(f"done {job_id} {message.deliveries}", flush=True)
        finally:
            if long_job:
                await protection.end()
        await message.ack()


async def main(args: argparse.Namespace) -> None:
    async with Worker(args.redis_url, args.queue, concurrency=args.concurrency,
                      drain_timeout_s=args.drain_timeout) as worker:  # fmt: skip
        protection = Protection(worker)
        running: set[asyncio.Task[None]] = set()
        async for message in worker:  # waits while `concurrency` jobs run
            task = asyncio.create_task(process(message, args, protection))
            running.add(task)
            task.add_done_callback(running.discard)
        # The iteration ends after a stop has drained: a job still running outlived the
        # drain timeout and is already back in the queue. Cancel it (its message is
        # released; nothing is lost).
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    print("stopped", file=sys.stderr)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL",
                        "redis://127.0.0.1:6379/0"))  # fmt: skip
    parser.add_argument("--queue", default=os.environ.get("QUEUE", "jobs"))
    parser.add_argument("--concurrency", type=int, default=4, help="jobs at once (default 4)")
    parser.add_argument(
        "--seconds",
        type=float,
        default=0.1,
        help="how long a job without its own `seconds` takes (default 0.1)",
    )
    parser.add_argument(
        "--protect-over",
        type=float,
        default=30.0,
        help="protect the pod while a job longer than this runs (default 30)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=120.0,
        help="seconds running jobs get to finish on a drain (default 120)",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        asyncio.run(main(parse_args()))
    except (AutoscalerError, ValueError) as e:  # Redis unreachable, a bad URL or setting
        sys.exit(f"worker: {e}")
