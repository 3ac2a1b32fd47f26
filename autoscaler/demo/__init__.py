"""``autoscaler demo``: the real controller scaling real worker processes, no cluster needed.

Modules: ``run`` (orchestration), ``replica`` (one coupled sidecar + processor),
``processor`` (the sample processor), ``producer`` (city names in bursts), ``view``
(live terminal view), ``summary`` (numbers, plot, trace), ``redisserver``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import signal
import sys
from pathlib import Path
from typing import Any

from autoscaler.logs import configure

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="everything on this machine: Redis, the controller, replicas as local processes",
        description="Start Redis (or use --redis-url), push city names to a queue, and let "
        "the controller scale local replicas — each the real `autoscaler consume` sidecar "
        "in front of a sample processor — with the same policy, drain protocol and reaper "
        "as in Kubernetes. Ends when the work is done and replicas are back at min, then "
        "prints produced / processed / duplicated / lost. Exit 1 if a message was lost. "
        "The demo's spec is deliberately fast: polling 1s, scale-down stabilization 5s, "
        "cooldown 5s, scale-up straight to the needed size.",
    )
    add = parser.add_argument
    add("--messages", type=_positive, default=1000, help="messages to push (default 1000)")
    add("--pattern", choices=("burst", "steady", "spiky"), default="burst",
        help="arrival shape (default burst: three bursts)")  # fmt: skip
    add("--redis-url", help="use this Redis (default: start a private redis-server from PATH)")
    add("--metrics-port", type=int, default=0,
        help="serve the controller's /metrics here (default 0: a free port, shown)")  # fmt: skip
    add("--duration", type=positive_float, metavar="SECONDS", help="stop after this long at most")
    add("--forever", action="store_true", help="repeat the workload until Ctrl-C")
    add("--json", action="store_true",
        help="print the summary as one JSON object on the last line of stdout")  # fmt: skip
    add("--plot", type=Path, metavar="FILE.png", help="write a timeline of backlog and replicas")
    add("--export", type=Path, metavar="DIR",
        help="write trace.csv and spec.yaml for `autoscaler simulate` to replay")  # fmt: skip
    add("--chaos", action="store_true", help="SIGKILL random replicas every 2-5 s")
    add("--seed", type=int, help="seed for --chaos")
    add("--latency-median-ms", type=positive_float, default=200.0,
        help="processor latency (default 200)")  # fmt: skip
    add("--latency-p95-ms", type=positive_float, default=500.0,
        help="its 95th percentile (default 500)")  # fmt: skip
    add("--failure-rate", type=fraction, default=0.02, help="share of HTTP 500s (default 0.02)")
    add("--concurrency", type=_positive, default=1, help="messages per sidecar (default 1)")
    add("--messages-per-replica", type=_positive, default=10, help="the target (default 10)")
    add("--min-replicas", type=_non_negative, default=1, help="default 1")
    add("--max-replicas", type=_positive, default=8, help="default 8")
    add("--log-dir", type=Path, help="keep the replicas' and controller's logs here")
    add("--log-level", default="WARNING", help="controller log level on stderr (default WARNING)")
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from autoscaler.demo.run import DemoOptions, run_demo

    configure("text", args.log_level)
    options = DemoOptions(
        messages=args.messages, pattern=args.pattern, redis_url=args.redis_url,
        metrics_port=args.metrics_port, duration_s=args.duration, forever=args.forever,
        json=args.json, plot=args.plot, export=args.export, chaos=args.chaos, seed=args.seed,
        latency_median_ms=args.latency_median_ms, latency_p95_ms=args.latency_p95_ms,
        failure_rate=args.failure_rate, concurrency=args.concurrency,
        messages_per_replica=args.messages_per_replica, min_replicas=args.min_replicas,
        max_replicas=args.max_replicas, log_dir=args.log_dir,
    )  # fmt: skip

    async def guarded() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            return await run_demo(options, stop, sys.stdout)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    return asyncio.run(guarded())


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0: {text!r}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a number > 0: {text!r}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 0 and below 1: {text!r}")
    return value
