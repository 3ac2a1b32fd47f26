"""``autoscaler consume``: parse flags, assemble Redis, HTTP and metrics, run the worker.

Exit codes: 0 after a drain on SIGTERM (or a cold stop on the second), 1 when Redis is
unreachable at start or held messages could not be pushed back, 2 for a bad flag.
Credentials come from ``REDIS_USERNAME`` / ``REDIS_PASSWORD`` / ``REDIS_PASSWORD_FILE`` (or
the URL), as for every Redis client (``autoscaler.redisconn``), and are never logged: the
URL is shown redacted.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import urllib.parse
from collections.abc import Mapping
from typing import Any

from autoscaler import argtypes, keys, logs
from autoscaler.consumer.settings import MIB, ConsumerSettings
from autoscaler.endpoint import RedisEndpoint, parse_sentinels
from autoscaler.errors import InputError

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "consume",
        help="the sidecar consumer: Redis list or stream → local processor over HTTP, with acks",
        description="Take messages from a Redis list into this consumer's processing list "
        "(or entries from a stream as a consumer of --group), POST each to --forward, ack "
        "after a 2xx; retry, dead-letter, drain on request or SIGTERM (a second SIGTERM is a "
        "cold stop). Durations are seconds.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--queue", type=argtypes.nonempty, default=None,
                        help="the Redis list to consume")  # fmt: skip
    source.add_argument(
        "--stream", type=argtypes.nonempty, default=None,
        help="or the Redis stream, with --group: XREADGROUP as consumer --id, XACK after a "
        "2xx; dead letters go to the stream <stream>:dead (or --dead-letter)",
    )  # fmt: skip
    for flag, options in _flags():
        parser.add_argument(flag, **options)
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL", DEFAULT_REDIS_URL),
        type=argtypes.redis_url,
        help=f"redis[s]://host:port/db (default $REDIS_URL, else {DEFAULT_REDIS_URL}); "
        "credentials from $REDIS_USERNAME / $REDIS_PASSWORD(_FILE), a rediss:// server "
        "verified against $REDIS_CA_FILE (else the system store), client certificate "
        "$REDIS_CERT_FILE / $REDIS_KEY_FILE",
    )
    parser.add_argument(
        "--sentinels", type=_sentinels, default=None, metavar="HOST:PORT,…",
        help="ask these sentinels for the master instead of --redis-url (with "
        "--sentinel-master); a failover is followed",
    )  # fmt: skip
    parser.add_argument("--sentinel-master", type=argtypes.nonempty, default=None,
                        metavar="NAME", help="the master's name at the sentinels")  # fmt: skip
    parser.add_argument(
        "--sentinel-tls", action="store_true",
        help="TLS to the sentinels and the master, verified against $REDIS_CA_FILE (else the "
        "system store); sentinels that need a password get $REDIS_SENTINEL_USERNAME / "
        "$REDIS_SENTINEL_PASSWORD(_FILE)",
    )  # fmt: skip
    parser.add_argument(
        "--cluster", action="store_true",
        help="--redis-url is a node of a Redis Cluster: the queue (and --dead-letter) need "
        "a {hash tag} so that all their keys share one slot",
    )  # fmt: skip
    parser.set_defaults(func=run)


def _flags() -> list[tuple[str, dict[str, Any]]]:
    """The flags with a fixed default, as (flag, add_argument options)."""
    return [
        ("--group", {"type": argtypes.nonempty, "default": None,
                     "help": "the stream's consumer group (created at the first entry if "
                     "missing); required with --stream"}),
        ("--claim-min-idle", {"type": argtypes.positive_float, "default": 15.0,
                              "help": "with --stream: seconds an entry must sit untouched in "
                              "the pending list of a consumer that is gone before it is "
                              "claimed (a crashed consumer's entries are judged together "
                              "and re-delivered alone: docs/streams.md); held entries are "
                              "touched every heartbeat, so a few heartbeats is enough "
                              "(default 15)"}),
        ("--forward", {"required": True, "type": argtypes.http_url, "metavar": "URL",
                       "help": "the local processor, e.g. http://127.0.0.1:8080/process"}),
        ("--concurrency", {"type": argtypes.positive_int, "default": 1,
                           "help": "messages in flight (default 1)"}),
        ("--rate", {"type": argtypes.positive_float, "default": None,
                    "help": "max messages taken per second (default unlimited)"}),
        ("--max-deliveries", {"type": argtypes.positive_int, "default": 5,
                              "help": "deliveries before a message is dead-lettered (default 5)"}),
        ("--dead-letter", {"type": argtypes.nonempty, "default": None, "metavar": "KEY",
                           "help": "dead-letter list (default <queue>:dead; reasons in "
                           "KEY:reasons)"}),
        ("--request-timeout", {"type": argtypes.positive_float, "default": 30.0,
                               "help": "seconds per POST before it counts as failed (default 30)"}),
        ("--drain-timeout", {"type": argtypes.non_negative_float, "default": 120.0,
                             "help": "seconds a drain waits for held messages before pushing "
                             "them back (default 120)"}),
        ("--heartbeat-interval", {"type": argtypes.seconds_at_least(0.05), "default": 1.0,
                                  "help": "seconds between heartbeats; the lease lives 3 of "
                                  "them (default 1)"}),
        ("--metrics-port", {"type": argtypes.port, "default": 0,
                            "help": "serve /metrics on this port (default 0: off)"}),
        ("--id", {"type": _consumer_id, "default": None,
                  "help": "unique consumer id (default $POD_NAME, else the hostname plus a "
                  "random suffix)"}),
        ("--max-message-bytes", {"type": argtypes.positive_int, "default": MIB,
                                 "help": f"bigger messages are dead-lettered (default {MIB})"}),
        ("--retry-backoff", {"type": argtypes.positive_float, "default": 0.5,
                             "help": "seconds before the first retry of a failed delivery, "
                             "or the first probe of a processor that is down; doubles each "
                             "time, the upper half jitter (default 0.5)"}),
        ("--retry-max-backoff", {"type": argtypes.positive_float, "default": 30.0,
                                 "help": "cap of that backoff, seconds (default 30)"}),
        ("--breaker-threshold", {"type": argtypes.positive_int, "default": 3,
                                 "help": "answered failures (5xx, timeouts) of this many "
                                 "different messages in a row open the circuit breaker: the "
                                 "processor fails everything, stop counting deliveries "
                                 "(default 3)"}),
        ("--redis-timeout", {"type": argtypes.non_negative_float, "default": 0.0,
                             "help": "seconds to wait for a Redis reply before the command "
                             "counts as failed and is retried (default 0: wait for ever; "
                             "must exceed 1 s, the blocking take's own timeout)"}),
        ("--reconcile-interval", {"type": argtypes.seconds_at_least(0.05), "default": 10.0,
                                  "help": "seconds between checks that the processing list "
                                  "holds only what the slots hold (default 10)"}),
        ("--log-format", {"choices": ("text", "json"), "default": "text",
                          "help": "default text"}),
        ("--log-level", {"type": argtypes.log_level,
                         "default": os.environ.get("LOG_LEVEL", "INFO"),
                         "help": "DEBUG, INFO, WARNING or ERROR (default $LOG_LEVEL, else "
                         "INFO)"}),
    ]  # fmt: skip


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    logs.configure(args.log_format, args.log_level)
    # imported here, not above: parsing the flags must not load asyncio, aiohttp and
    # redis (``autoscaler consume --help`` ≤ 150 ms, docs/performance.md)
    import asyncio

    from autoscaler.consumer.service import serve
    from autoscaler.consumer.stream import StreamOptions

    stream = StreamOptions(args.group, args.claim_min_idle) if args.stream else None
    return asyncio.run(
        serve(settings, server_of(args, settings), args.metrics_port,
              redis_timeout_s=args.redis_timeout, stream=stream)
    )  # fmt: skip


def server_of(args: argparse.Namespace, settings: ConsumerSettings) -> str:
    """The server as ``autoscaler.endpoint`` folds it (``redisconn.make_client`` unfolds
    it): --redis-url, or --sentinels/--sentinel-master, with --cluster. ``InputError``
    for what cannot work: sentinels without a master, a Cluster URL with a database, a
    queue or dead-letter key that would not share one Cluster slot."""
    if (args.sentinels is None) != (args.sentinel_master is None):
        raise InputError("--sentinels and --sentinel-master go together")
    if args.sentinel_tls and args.sentinels is None:
        raise InputError("--sentinel-tls: only with --sentinels (--redis-url says TLS by "
                         "rediss://)")  # fmt: skip
    if args.sentinels is not None:
        if args.cluster:
            raise InputError("--cluster: not with --sentinels (a Cluster has no sentinels)")
        endpoint = RedisEndpoint(sentinels=args.sentinels, sentinel_master=args.sentinel_master,
                                 sentinel_tls=args.sentinel_tls)  # fmt: skip
        return endpoint.fold() or ""
    if args.cluster:
        if args.stream is not None:
            raise InputError("--cluster: not with --stream (stream consumers are not supported "
                             "on Redis Cluster yet: their scripts touch keys in other slots; "
                             "use a standalone or Sentinel-managed Redis for streams)")  # fmt: skip
        db = urllib.parse.urlsplit(args.redis_url).path.strip("/")
        if db not in ("", "0"):
            raise InputError(f"--redis-url: Redis Cluster has only database 0, not {db[:20]!r}")
        tag = keys.hash_tag(settings.queue)
        if tag is None:
            name = settings.queue[:80]
            raise InputError(f"--queue: {name!r} has no {{hash tag}}: under --cluster its "
                             f"processing lists would land in other slots; name it e.g. "
                             f"'{{{name}}}' or 'jobs:{{{name}}}'")  # fmt: skip
        if settings.dead_letter and keys.hash_tag(settings.dead_letter) != tag:
            raise InputError(f"--dead-letter: {settings.dead_letter[:80]!r} must carry the "
                             f"queue's hash tag {{{tag}}} under --cluster")  # fmt: skip
        return RedisEndpoint(url=args.redis_url, cluster=True).fold() or args.redis_url
    return str(args.redis_url)


def _sentinels(text: str) -> tuple[tuple[str, int], ...]:
    try:
        return parse_sentinels(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"host:port,host:port expected, not {e}") from None


def _source(args: argparse.Namespace) -> str:
    """The list or the stream to consume (argparse allows one), a stream with its group."""
    if args.stream is not None and args.group is None:
        raise InputError(f"--group: required with --stream {args.stream[:80]!r}")
    if args.stream is None and args.group is not None:
        raise InputError("--group: only with --stream (a list has no consumer group)")
    return str(args.queue or args.stream)


def settings_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] = os.environ
) -> ConsumerSettings:
    """The sidecar's settings; ``environ`` supplies ``POD_NAME`` (the Downward API)."""
    pod = environ.get("POD_NAME", "")
    consumer_id = args.id or pod or f"{socket.gethostname()}-{secrets.token_hex(3)}"
    if not keys.valid_consumer_id(consumer_id):
        raise InputError(f"--id: {consumer_id[:80]!r} (from $POD_NAME or the hostname) is not "
                         f"a valid consumer id: {keys.CONSUMER_ID_RE.pattern}")  # fmt: skip
    return ConsumerSettings(
        queue=_source(args),
        forward_url=args.forward,
        consumer_id=consumer_id,
        pod=pod,
        concurrency=args.concurrency,
        rate_per_s=args.rate,
        max_deliveries=args.max_deliveries,
        dead_letter=args.dead_letter or "",
        request_timeout_s=args.request_timeout,
        drain_timeout_s=args.drain_timeout,
        heartbeat_interval_s=args.heartbeat_interval,
        max_message_bytes=args.max_message_bytes,
        take_timeout_s=min(1.0, args.heartbeat_interval),
        backoff_base_s=args.retry_backoff,
        backoff_max_s=max(args.retry_backoff, args.retry_max_backoff),
        breaker_threshold=args.breaker_threshold,
        reconcile_interval_s=args.reconcile_interval,
    )


def _consumer_id(text: str) -> str:
    if not keys.valid_consumer_id(text):
        raise argparse.ArgumentTypeError(f"letters, digits, '.', '_', '-' (≤ 253): {text[:80]!r}")
    return text
