"""``autoscaler consume``'s runtime: assemble Redis, HTTP and metrics, run the worker.

Apart from ``cli`` (the flags) so that parsing them imports neither aiohttp nor redis.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from autoscaler.consumer.logs import ConsumerLog
from autoscaler.consumer.metrics import ConsumerMetrics
from autoscaler.consumer.protection import ProtectionEndpoint
from autoscaler.consumer.settings import ConsumerSettings
from autoscaler.consumer.stream import StreamOptions, StreamWorker
from autoscaler.consumer.worker import Worker
from autoscaler.errors import AutoscalerError, InputError, QueueError
from autoscaler.metrics import start_http_server
from autoscaler.redisconn import RedisCredentials, credential_hint, make_client
from autoscaler.remote import redact_url

logger = logging.getLogger(__name__)


async def serve(
    settings: ConsumerSettings,
    redis_url: str,
    metrics_port: int,
    *,
    redis_timeout_s: float = 0,
    stream: StreamOptions | None = None,
) -> int:
    """Assemble the clients, run the worker until a stop, return the exit code.
    ``stream``: consume the stream ``settings.queue`` (``consumer.stream``), not a list."""
    if redis_timeout_s and redis_timeout_s <= settings.take_timeout_s:
        raise InputError(f"--redis-timeout: {redis_timeout_s}s must exceed the blocking take's "
                         f"{settings.take_timeout_s}s")  # fmt: skip
    registry = CollectorRegistry()
    metrics = ConsumerMetrics(registry, settings.queue)
    workers: list[Worker] = []  # the readiness probe asks the worker, once there is one
    log = ConsumerLog(logger, settings.queue, settings.consumer_id)
    protection = ProtectionEndpoint(settings.consumer_id, settings.queue, log)
    server = await _serve_metrics(metrics_port, registry, lambda: any(w.ready for w in workers),
                                  protection.routes())  # fmt: skip
    try:
        redis = connect(redis_url, settings.concurrency, redis_timeout_s or None)
        protection.redis = redis
    except AutoscalerError as e:  # a URL redis-py cannot use (the message is redacted)
        logger.error("%s", e)
        if server is not None:
            await server.cleanup()
        return 1
    connector = aiohttp.TCPConnector(limit=settings.concurrency)
    loop = asyncio.get_running_loop()
    try:
        async with aiohttp.ClientSession(connector=connector) as session:
            worker = (
                Worker(redis, session, settings, metrics)
                if stream is None
                else StreamWorker(redis, session, settings, metrics, stream)
            )
            workers.append(worker)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, worker.request_stop)
            try:
                await worker.run()
            except QueueError as e:
                hint = credential_hint(e.__cause__ or e, RedisCredentials.from_env().origin)
                logger.error("cannot use redis at %s: %s%s", redact_url(redis_url), e, hint)
                return 1
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            return 1 if worker.failed else 0
    finally:
        await redis.aclose()
        if server is not None:
            await server.cleanup()


def connect(redis_url: str, concurrency: int, read_timeout_s: float | None = None) -> Redis:
    """A bytes client from ``autoscaler.redisconn``: credentials from the environment.

    No socket timeout by default: the takes block in Redis with their own
    (``take_timeout_s``), and a stalled Redis is waited for rather than given up on.
    With ``--redis-timeout`` a reply that does not come in time fails the command, which
    is retried: every script is idempotent or reconciled (``redisqueue.queue``).
    The pool holds a connection per slot, the heartbeat's, and room for acks meanwhile;
    it is the factory's lean pool (no lock or timer per command: 40–75 µs CPU per message
    less at 8–32 slots, ``bench/bench_consumer.py``).
    """
    return make_client(redis_url, connect_timeout_s=5.0, read_timeout_s=read_timeout_s,
                       max_connections=2 * concurrency + 4, lean_pool=True)  # fmt: skip


async def _serve_metrics(
    port: int, registry: CollectorRegistry, ready: Callable[[], bool], routes: list[web.RouteDef]
) -> web.AppRunner | None:
    """/metrics, /healthz, and /readyz for the pod's readiness probe: not ready while
    draining or while the processor is down (the circuit breaker is open); and ``routes``:
    /protection for the processor (``consumer.protection``)."""
    if not port:
        return None
    try:
        return await start_http_server(registry, port, ready=ready, routes=routes)
    except OSError as e:
        raise InputError(f"--metrics-port: cannot listen on {port}: {e}") from e
