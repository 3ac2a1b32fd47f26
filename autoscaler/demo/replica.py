"""One demo replica: the coupled pod (processor + sidecar), as one process group here.

This launcher serves the sample processor itself (``demo.processor``, on a free loopback
port) and runs the real sidecar, ``autoscaler consume --forward`` to it, as a child. The
order on SIGTERM is a pod's with a well-behaved sidecar: the sidecar gets it first (it
drains: finishes what it holds, pushes back the rest, reports ``drained``), and only
once it has exited does the processor stop. The sidecar's exit code is the replica's.

``python -m autoscaler.demo.replica --redis-url URL --queue Q --id ID [...]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from autoscaler.demo.processor import RECORD_KEY, add_arguments, processor_from_args, serve
from autoscaler.redisconn import make_client


def sidecar_argv(args: argparse.Namespace, port: int) -> list[str]:
    return [
        sys.executable, "-m", "autoscaler", "consume",
        "--redis-url", args.redis_url,
        "--queue", args.queue,
        "--id", args.id,
        "--forward", f"http://127.0.0.1:{port}/process",
        "--concurrency", str(args.concurrency),
        "--max-deliveries", str(args.max_deliveries),
        "--drain-timeout", str(args.drain_timeout),
        "--heartbeat-interval", str(args.heartbeat_interval),
        "--request-timeout", "30",
    ]  # fmt: skip


async def run(args: argparse.Namespace) -> int:
    redis = make_client(args.redis_url)
    runner, port = await serve(processor_from_args(args, redis), "127.0.0.1", 0)
    try:
        sidecar = await asyncio.create_subprocess_exec(*sidecar_argv(args, port))
        loop = asyncio.get_running_loop()

        def forward() -> None:  # a second SIGTERM is forwarded too: the sidecar's cold stop
            with contextlib.suppress(ProcessLookupError):
                sidecar.send_signal(signal.SIGTERM)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, forward)
        try:
            return await sidecar.wait()
        finally:
            if sidecar.returncode is None:  # cancelled: never leave the child behind
                sidecar.kill()
                await sidecar.wait()
    finally:
        await runner.cleanup()
        await redis.aclose()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m autoscaler.demo.replica")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--id", required=True, help="the replica id, also the consumer id")
    parser.add_argument("--record", default=RECORD_KEY, help=f"default {RECORD_KEY}")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--max-deliveries", type=int, default=5)
    parser.add_argument("--drain-timeout", type=float, default=10.0)
    parser.add_argument("--heartbeat-interval", type=float, default=1.0)
    add_arguments(parser)
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
