"""``autoscaler consume``: parse flags, assemble Redis, HTTP and metrics, run the worker.

Exit codes: 0 after a drain on SIGTERM (or a cold stop on the second), 1 when Redis is
unreachable at start or held messages could not be pushed back, 2 for a bad flag.
Credentials come from ``REDIS_USERNAME`` / ``REDIS_PASSWORD`` (or the URL) and are never
logged: the URL is shown with its user info masked.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import socket
import urllib.parse
from typing import Any

import aiohttp
from prometheus_client import CollectorRegistry, start_http_server
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

from autoscaler import keys, logs
from autoscaler.consumer.metrics import ConsumerMetrics
from autoscaler.consumer.settings import MIB, ConsumerSettings
from autoscaler.consumer.worker import Worker
from autoscaler.errors import InputError, QueueError

logger = logging.getLogger(__name__)
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "consume",
        help="the sidecar consumer: Redis list → local processor over HTTP, with acks",
        description="Take messages from a Redis list into this consumer's processing list, "
        "POST each to --forward, ack after a 2xx; retry, dead-letter, drain on request or "
        "SIGTERM (a second SIGTERM is a cold stop). Durations are seconds.",
    )
    for flag, options in _flags():
        parser.add_argument(flag, **options)
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("REDIS_URL", DEFAULT_REDIS_URL),
        type=_redis_url,
        help=f"redis[s]://host:port/db (default $REDIS_URL, else {DEFAULT_REDIS_URL}); "
        "credentials from $REDIS_USERNAME / $REDIS_PASSWORD",
    )
    parser.set_defaults(func=run)


def _flags() -> list[tuple[str, dict[str, Any]]]:
    """The flags with a fixed default, as (flag, add_argument options)."""
    return [
        ("--queue", {"required": True, "type": _nonempty, "help": "the Redis list to consume"}),
        ("--forward", {"required": True, "type": _http_url, "metavar": "URL",
                       "help": "the local processor, e.g. http://127.0.0.1:8080/process"}),
        ("--concurrency", {"type": _positive_int, "default": 1,
                           "help": "messages in flight (default 1)"}),
        ("--rate", {"type": _positive_float, "default": None,
                    "help": "max messages taken per second (default unlimited)"}),
        ("--max-deliveries", {"type": _positive_int, "default": 5,
                              "help": "deliveries before a message is dead-lettered (default 5)"}),
        ("--dead-letter", {"type": _nonempty, "default": None, "metavar": "KEY",
                           "help": "dead-letter list (default <queue>:dead; reasons in "
                           "KEY:reasons)"}),
        ("--request-timeout", {"type": _positive_float, "default": 30.0,
                               "help": "seconds per POST before it counts as failed (default 30)"}),
        ("--drain-timeout", {"type": _non_negative_float, "default": 120.0,
                             "help": "seconds a drain waits for held messages before pushing "
                             "them back (default 120)"}),
        ("--heartbeat-interval", {"type": _positive_float, "default": 1.0,
                                  "help": "seconds between heartbeats; the lease lives 3 of "
                                  "them (default 1)"}),
        ("--metrics-port", {"type": _port, "default": 0,
                            "help": "serve /metrics on this port (default 0: off)"}),
        ("--id", {"type": _consumer_id, "default": None,
                  "help": "unique consumer id (default $POD_NAME, else the hostname plus a "
                  "random suffix)"}),
        ("--max-message-bytes", {"type": _positive_int, "default": MIB,
                                 "help": f"bigger messages are dead-lettered (default {MIB})"}),
        ("--log-format", {"choices": ("text", "json"), "default": "text",
                          "help": "default text"}),
    ]  # fmt: skip


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    logs.configure(args.log_format)
    return asyncio.run(serve(settings, args.redis_url, args.metrics_port))


def settings_from_args(args: argparse.Namespace) -> ConsumerSettings:
    pod = os.environ.get("POD_NAME", "")
    consumer_id = args.id or pod or f"{socket.gethostname()}-{secrets.token_hex(3)}"
    if not keys.valid_consumer_id(consumer_id):
        raise InputError(f"--id: {consumer_id[:80]!r} (from $POD_NAME or the hostname) is not "
                         f"a valid consumer id: {keys.CONSUMER_ID_RE.pattern}")  # fmt: skip
    return ConsumerSettings(
        queue=args.queue,
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
    )


async def serve(settings: ConsumerSettings, redis_url: str, metrics_port: int) -> int:
    """Assemble the clients, run the worker until a stop, return the exit code."""
    registry = CollectorRegistry()
    metrics = ConsumerMetrics(registry, settings.queue)
    server = _serve_metrics(metrics_port, registry)
    redis = connect(redis_url)
    connector = aiohttp.TCPConnector(limit=settings.concurrency)
    loop = asyncio.get_running_loop()
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            worker = Worker(redis, session, settings, metrics)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, worker.request_stop)
            try:
                await worker.run()
            except QueueError as e:
                logger.error("cannot use redis at %s: %s", redact(redis_url), e)
                return 1
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            return 1 if worker.failed else 0
    finally:
        await redis.aclose()
        if server is not None:
            server.shutdown()
            server.server_close()


def connect(redis_url: str) -> Redis:
    """A bytes client; credentials from the environment when the URL has none."""
    extra: dict[str, Any] = {}
    for env, option in (("REDIS_USERNAME", "username"), ("REDIS_PASSWORD", "password")):
        if os.environ.get(env):
            extra[option] = os.environ[env]
    # redis-py's own retry only rides out blips; the worker retries longer outages itself.
    retry = Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), 2)
    return Redis.from_url(
        redis_url, decode_responses=False, socket_connect_timeout=5, retry=retry, **extra
    )


def redact(url: str) -> str:
    """The URL with any user info masked, for logs."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))


def _serve_metrics(port: int, registry: CollectorRegistry) -> Any:
    if not port:
        return None
    try:
        server, _thread = start_http_server(port, registry=registry)
    except OSError as e:
        raise InputError(f"--metrics-port: cannot listen on {port}: {e}") from e
    return server


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number ≥ 0: {text!r}")
    return value


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text!r}")
    return value


def _port(text: str) -> int:
    value = int(text) if text.isdigit() else -1
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a port (0-65535): {text!r}")
    return value


def _nonempty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _http_url(text: str) -> str:
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"not an http(s) URL: {text!r}")
    return text


def _redis_url(text: str) -> str:
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
        raise argparse.ArgumentTypeError(f"not a redis:// URL: {redact(text)!r}")
    return text


def _consumer_id(text: str) -> str:
    if not keys.valid_consumer_id(text):
        raise argparse.ArgumentTypeError(f"letters, digits, '.', '_', '-' (≤ 253): {text[:80]!r}")
    return text
