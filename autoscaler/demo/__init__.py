"""``autoscaler demo``: the real controller scaling real worker processes, no cluster needed.

Modules: ``run`` (orchestration), ``replica`` (one coupled sidecar + processor),
``processor`` (the sample processor), ``producer`` (city names in bursts), ``view``
(live terminal view), ``summary`` (numbers, plot, trace), ``redisserver``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from autoscaler.argtypes import (
    fraction,
    log_level,
    non_negative_int,
    output_dir,
    plot_file,
    port,
    positive_float,
    positive_int,
    redis_url,
)
from autoscaler.errors import InputError
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
    add("--messages", type=positive_int, default=1000, help="messages to push (default 1000)")
    add("--pattern", choices=("burst", "steady", "spiky"), default="burst",
        help="arrival shape (default burst: three bursts)")  # fmt: skip
    add("--redis-url", type=redis_url,
        help="use this Redis (default: start a private redis-server from PATH)")  # fmt: skip
    add("--metrics-port", type=port, default=0,
        help="serve the controller's /metrics here (default 0: a free port, shown)")  # fmt: skip
    add("--duration", type=positive_float, metavar="SECONDS", help="stop after this long at most")
    add("--forever", action="store_true", help="repeat the workload until Ctrl-C")
    add("--json", action="store_true",
        help="print only the summary, as one JSON object, on stdout (the rest goes to "
        "stderr): `demo --json | jq`")  # fmt: skip
    add("--plot", type=plot_file, metavar="FILE.png|.svg|.pdf",
        help="write a timeline of backlog and replicas (format from the extension)")  # fmt: skip
    add("--export", type=output_dir, metavar="DIR",
        help="write trace.csv and spec.yaml for `autoscaler simulate` to replay")  # fmt: skip
    add("--chaos", action="store_true", help="SIGKILL random replicas every 2-5 s")
    add("--seed", type=int, help="seed for --chaos")
    add("--latency-median-ms", type=positive_float, default=200.0,
        help="processor latency (default 200)")  # fmt: skip
    add("--latency-p95-ms", type=positive_float, default=500.0,
        help="its 95th percentile (default 500)")  # fmt: skip
    add("--failure-rate", type=fraction, default=0.02, help="share of HTTP 500s (default 0.02)")
    add("--concurrency", type=positive_int, default=1, help="messages per sidecar (default 1)")
    add("--messages-per-replica", type=positive_int, default=10, help="the target (default 10)")
    add("--min-replicas", type=non_negative_int, default=1, help="default 1")
    add("--max-replicas", type=positive_int, default=8, help="default 8")
    add("--log-dir", type=output_dir, help="keep the replicas' and controller's logs here")
    add("--log-level", type=log_level, default="WARNING",
        help="controller log level on stderr (default WARNING)")  # fmt: skip
    parser.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    # Imported here: `autoscaler --help` must not load the demo (nor rich, an extra).
    try:
        from autoscaler.demo.run import DemoOptions, run_demo
    except ModuleNotFoundError as e:
        if e.name != "rich":
            raise
        raise InputError("the demo needs its extra: pip install 'queue-autoscaler[demo]'") from e

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
            # With --json, stdout carries the JSON only; everything else goes to stderr.
            return await run_demo(options, stop, sys.stderr if args.json else sys.stdout,
                                  json_out=sys.stdout)  # fmt: skip
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    return asyncio.run(guarded())
