"""Metric sources: where the load numbers come from.

Terms:

source
    An object that reads many triggers of one server in one go (``Source.read``) and
    answers one ``Reading`` per trigger, in order. A failed read is a failed ``Reading``
    (``value=None``), never an exception and never zero: the policy holds replicas.
server
    One Redis URL or one Prometheus URL. Each server gets exactly one source, hence one
    connection pool, however many workloads use it (KEDA opens one per trigger: #6955).
pool
    ``SourcePool``: creates sources lazily, one per server, resolves a trigger's missing
    URL to the controller's ``--redis-url``/``--prometheus-url``, and reads a whole cycle's
    due triggers with one ``read`` per server, concurrently.
backoff
    After a server fails, its source answers failed readings at once until an exponential,
    capped, jittered delay has passed (``autoscaler.remote.Backoff``), then simply tries
    again: a dead server is not hammered, and recovery never needs a restart (KEDA #2415).

Submodules: ``sources.redis`` (``RedisSource``), ``sources.prometheus``
(``PrometheusSource``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from operator import attrgetter
from typing import Protocol, TypeVar

from redis.asyncio import Redis

from autoscaler.endpoint import RedisEndpoint
from autoscaler.errors import AutoscalerError
from autoscaler.policy.spec import PrometheusTrigger, RedisStreamTrigger, RedisTrigger, Trigger
from autoscaler.policy.state import Reading
from autoscaler.redisconn import SecretLookup
from autoscaler.remote import redact_url
from autoscaler.sources.prometheus import PrometheusSource
from autoscaler.sources.redis import RedisSource

logger = logging.getLogger(__name__)

T_contra = TypeVar("T_contra", contravariant=True)
_redis_url_of = attrgetter("redis_url")

__all__ = ["Source", "SourcePool"]


class Source(Protocol[T_contra]):
    """A metric source (KEDA's ``Scaler``, minus what we don't need)."""

    async def read(self, triggers: Sequence[T_contra]) -> list[Reading]:
        """One reading per trigger, aligned with ``triggers``; failures are failed readings."""
        ...

    async def aclose(self) -> None:
        """Release connections. The source is not used afterwards."""
        ...


# A Redis source reads list and stream triggers alike (``sources.redisstream``).
QueueTrigger = RedisTrigger | RedisStreamTrigger
RedisFactory = Callable[[str], Source[QueueTrigger]]
PrometheusFactory = Callable[[str], Source[PrometheusTrigger]]


def _default_prometheus(url: str) -> Source[PrometheusTrigger]:
    return PrometheusSource(url)


class SourcePool:
    """One source per server URL, created on first use; itself a ``Source[Trigger]``.

    ``redis_url``/``prometheus_url`` are the controller's defaults for triggers whose own
    URL is None. The factories build a source for a URL (inject settings with
    ``functools.partial(RedisSource, connect_timeout_s=…)``, or fakes in tests); a factory
    that raises ``AutoscalerError`` (a URL redis-py cannot parse, a missing secret file)
    fails that server's triggers and is tried again next cycle.
    """

    def __init__(
        self,
        *,
        redis_url: str | None = None,
        prometheus_url: str | None = None,
        redis_factory: RedisFactory | None = None,
        prometheus_factory: PrometheusFactory = _default_prometheus,
        secrets: SecretLookup | None = None,
    ) -> None:
        self.redis_url = redis_url
        if redis_factory is None:  # the real source, reading Secrets through ``secrets``
            redis_factory = functools.partial(RedisSource, secrets=secrets)
        self.prometheus_url = prometheus_url
        self._redis_factory = redis_factory
        self._prometheus_factory = prometheus_factory
        self._redis: dict[str, Source[QueueTrigger]] = {}
        self._prometheus: dict[str, Source[PrometheusTrigger]] = {}

    def redis(self, url: str | None = None) -> Source[QueueTrigger]:
        """The source for ``url`` (default: ``redis_url``); raises ``AutoscalerError``."""
        resolved = url or self.redis_url
        if url is not None and RedisEndpoint.unfold(url).default:  # options, no server
            resolved = RedisEndpoint.unfold(url).with_url(self.redis_url).fold()
            if RedisEndpoint.unfold(resolved).default:
                resolved = None
        if resolved is None:
            raise AutoscalerError("the trigger has no redis-url and --redis-url is not set")
        if resolved not in self._redis:
            self._redis[resolved] = self._redis_factory(resolved)
        return self._redis[resolved]

    def redis_client(self, url: str | None = None) -> Redis:
        """The client of ``url``'s source: one pool per server for reads, drains and the
        reaper alike. Raises ``AutoscalerError`` (also when the factory made no
        ``RedisSource``, as a test's fake may)."""
        source = self.redis(url)
        if not isinstance(source, RedisSource):
            raise AutoscalerError(f"the source of {redact_url(url or '')} has no Redis client")
        return source.client

    def prometheus(self, url: str | None = None) -> Source[PrometheusTrigger]:
        """The source for ``url`` (default: ``prometheus_url``); raises ``AutoscalerError``."""
        resolved = url or self.prometheus_url
        if resolved is None:
            raise AutoscalerError(
                "the trigger has no prometheus url and --prometheus-url is not set"
            )
        if resolved not in self._prometheus:
            self._prometheus[resolved] = self._prometheus_factory(resolved)
        return self._prometheus[resolved]

    async def read(self, triggers: Sequence[Trigger]) -> list[Reading]:
        """Read every trigger: one ``read`` per server, all servers concurrently.

        The result is aligned with ``triggers``. A server's failure only fails its own
        triggers; this method raises nothing but cancellation.
        """
        readings: list[Reading] = [Reading.failed("not read")] * len(triggers)
        if set(map(type, triggers)) == {RedisTrigger}:  # the usual batch: checked in C
            urls = set(map(_redis_url_of, triggers))
            if len(urls) == 1:  # ... all on one server: no grouping
                url = urls.pop() or self.redis_url
                every = range(len(triggers))
                redis_triggers: Sequence[RedisTrigger] = triggers  # type: ignore[assignment]
                # gathered, not awaited: a cancelled gather raises even when the read
                # swallowed the cancel (Python 3.11; see autoscaler.aio, which guards it too)
                await asyncio.gather(
                    self._fill(
                        readings,
                        every,
                        url,
                        functools.partial(self._read_redis, url, redis_triggers),
                    )
                )
                return readings
        redis_groups: dict[str | None, list[tuple[int, QueueTrigger]]] = {}
        prom_groups: dict[str | None, list[tuple[int, PrometheusTrigger]]] = {}
        for i, trigger in enumerate(triggers):
            if isinstance(trigger, RedisTrigger | RedisStreamTrigger):
                redis_groups.setdefault(trigger.redis_url or self.redis_url, []).append(
                    (i, trigger)
                )
            else:
                prom_groups.setdefault(trigger.url or self.prometheus_url, []).append((i, trigger))
        jobs = [
            self._fill(
                readings,
                [i for i, _ in group],
                url,
                functools.partial(self._read_redis, url, [t for _, t in group]),
            )
            for url, group in redis_groups.items()
        ] + [
            self._fill(
                readings,
                [i for i, _ in group],
                url,
                functools.partial(self._read_prometheus, url, group),
            )
            for url, group in prom_groups.items()
        ]
        await asyncio.gather(*jobs)
        return readings

    async def _read_redis(self, url: str | None, triggers: Sequence[QueueTrigger]) -> list[Reading]:
        return await self.redis(url).read(triggers)

    async def _read_prometheus(
        self, url: str | None, group: list[tuple[int, PrometheusTrigger]]
    ) -> list[Reading]:
        return await self.prometheus(url).read([trigger for _, trigger in group])

    @staticmethod
    async def _fill(
        out: list[Reading],
        indices: Sequence[int],
        url: str | None,
        read: Callable[[], Awaitable[list[Reading]]],
    ) -> None:
        """Await one server's read into ``out``; any failure becomes failed readings.

        ``read`` makes the read's coroutine here, not in the caller: a cycle cancelled
        before this task first ran (a stop) leaves no coroutine never awaited."""
        try:
            results = await read()
            if len(results) != len(indices):
                raise AutoscalerError(f"source answered {len(results)} readings for {len(indices)}")
        except AutoscalerError as e:
            results = [Reading.failed(str(e))] * len(indices)
        except Exception as e:  # a bug in one source must not stop the other servers
            server = redact_url(url) if url else "<none>"
            logger.exception("source read crashed server=%s", server)
            results = [Reading.failed(f"{server}: {type(e).__name__}: {e}")] * len(indices)
        if len(indices) == len(out):  # the only group, so indices are 0..n-1 in order
            out[:] = results  # in C: 0.24 → 0.02 ms at 10,000 (docs/performance.md, goal 1)
            return
        for i, reading in zip(indices, results, strict=True):
            out[i] = reading

    async def aclose(self) -> None:
        """Close every source; the pool may be reused (sources are created again)."""
        sources: list[Source[QueueTrigger] | Source[PrometheusTrigger]] = [
            *self._redis.values(),
            *self._prometheus.values(),
        ]
        self._redis.clear()
        self._prometheus.clear()
        for source in sources:
            try:
                await source.aclose()
            except Exception:  # closing is best effort: log, close the rest
                logger.exception("closing a source failed")
