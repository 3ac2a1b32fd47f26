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
    capped, jittered delay has passed, then simply tries again: a dead server is not
    hammered, and recovery never needs a restart (KEDA #2415).

Submodules: ``sources.redis`` (``RedisSource``), ``sources.prometheus``
(``PrometheusSource``). They import from here, so this module imports them lazily.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from autoscaler.errors import AutoscalerError, SourceError
from autoscaler.policy.spec import PrometheusTrigger, RedisTrigger, Trigger
from autoscaler.policy.state import Reading

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger(__name__)

T_contra = TypeVar("T_contra", contravariant=True)
_redis_url_of = attrgetter("redis_url")

__all__ = ["Backoff", "EnvSecret", "Source", "SourcePool", "redact_url"]


class Source(Protocol[T_contra]):
    """A metric source (KEDA's ``Scaler``, minus what we don't need)."""

    async def read(self, triggers: Sequence[T_contra]) -> list[Reading]:
        """One reading per trigger, aligned with ``triggers``; failures are failed readings."""
        ...

    async def aclose(self) -> None:
        """Release connections. The source is not used afterwards."""
        ...


@dataclass
class Backoff:
    """Exponential, capped, jittered delay between attempts at a failing server.

    Delay after the n-th failure in a row: ``min(cap_s, base_s · 2^(n-1))`` times a jitter
    factor in [0.5, 1), so that many controllers don't retry in lockstep. Defaults 0.5 s
    and 10 s: an outage is retried at least every 10 s, so a recovery shows within one or
    two polling intervals, and no restart is ever needed (KEDA #2415).
    """

    base_s: float = 0.5
    cap_s: float = 10.0
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0
    retry_at: float = 0.0
    last_error: str = ""

    def blocked(self) -> str | None:
        """While backing off: the last error and when the next attempt is; else None."""
        wait_s = self.retry_at - self.clock()
        if self.failures == 0 or wait_s <= 0:
            return None
        return f"{self.last_error} (backing off: next attempt in {wait_s:.1f} s)"

    def failed(self, error: str) -> float:
        """Record a failure; returns the delay before the next attempt, in seconds."""
        self.failures += 1
        self.last_error = error
        ceiling = min(self.cap_s, self.base_s * 2.0 ** min(self.failures - 1, 30))
        delay = ceiling * (0.5 + 0.5 * self.rng.random())
        self.retry_at = self.clock() + delay
        return delay

    def succeeded(self) -> int:
        """Record a success; returns how many failures in a row it ends (0: none)."""
        ended, self.failures, self.retry_at = self.failures, 0, 0.0
        return ended


_SECRET_QUERY_KEYS = frozenset({"password", "pass", "token", "access_token"})


def redact_url(url: str) -> str:
    """``url`` fit for a log line or an error: password and secret query values masked."""
    try:
        parts = urllib.parse.urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:***@{hostport}" if ":" in userinfo else f"***@{hostport}"
        query = urllib.parse.urlencode(
            [
                (k, "***" if k.lower() in _SECRET_QUERY_KEYS else v)
                for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
            ],
            safe="*",
        )
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:
        return "<unparseable url>"


@dataclass(frozen=True)
class EnvSecret:
    """A secret from the controller's environment, never from an annotation.

    ``NAME`` holds it, or ``NAME_FILE`` names a file holding it (a mounted Secret; wins
    over ``NAME``). The file is re-read on every ``get`` so a rotated Secret is picked
    up without a restart; one trailing newline (common in Secret files) is dropped.
    """

    name: str
    value: str | None = None
    path: str | None = None

    @classmethod
    def from_env(cls, name: str, environ: Mapping[str, str] | None = None) -> EnvSecret:
        env = os.environ if environ is None else environ
        return cls(name, env.get(name) or None, env.get(f"{name}_FILE") or None)

    @property
    def present(self) -> bool:
        return bool(self.value or self.path)

    def get(self) -> str | None:
        """The secret now; ``SourceError`` if its file cannot be read."""
        if self.path is None:
            return self.value
        try:
            return Path(self.path).read_text().removesuffix("\n").removesuffix("\r")
        except OSError as e:
            raise SourceError(f"cannot read {self.name}_FILE {self.path}: {e.strerror}") from e


RedisFactory = Callable[[str], Source[RedisTrigger]]
PrometheusFactory = Callable[[str], Source[PrometheusTrigger]]


def _default_redis(url: str) -> Source[RedisTrigger]:
    from autoscaler.sources.redis import RedisSource

    return RedisSource(url)


def _default_prometheus(url: str) -> Source[PrometheusTrigger]:
    from autoscaler.sources.prometheus import PrometheusSource

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
        redis_factory: RedisFactory = _default_redis,
        prometheus_factory: PrometheusFactory = _default_prometheus,
    ) -> None:
        self.redis_url = redis_url
        self.prometheus_url = prometheus_url
        self._redis_factory = redis_factory
        self._prometheus_factory = prometheus_factory
        self._redis: dict[str, Source[RedisTrigger]] = {}
        self._prometheus: dict[str, Source[PrometheusTrigger]] = {}

    def redis(self, url: str | None = None) -> Source[RedisTrigger]:
        """The source for ``url`` (default: ``redis_url``); raises ``AutoscalerError``."""
        resolved = url or self.redis_url
        if resolved is None:
            raise AutoscalerError("the trigger has no redis-url and --redis-url is not set")
        if resolved not in self._redis:
            self._redis[resolved] = self._redis_factory(resolved)
        return self._redis[resolved]

    def redis_client(self, url: str | None = None) -> Redis:
        """The client of ``url``'s source: one pool per server for reads, drains and the
        reaper alike. Raises ``AutoscalerError`` (also when the factory made no
        ``RedisSource``, as a test's fake may)."""
        from autoscaler.sources.redis import RedisSource

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
                    self._fill(readings, every, url, self._read_redis(url, redis_triggers))
                )
                return readings
        redis_groups: dict[str | None, list[tuple[int, RedisTrigger]]] = {}
        prom_groups: dict[str | None, list[tuple[int, PrometheusTrigger]]] = {}
        for i, trigger in enumerate(triggers):
            if isinstance(trigger, RedisTrigger):
                redis_groups.setdefault(trigger.redis_url or self.redis_url, []).append(
                    (i, trigger)
                )
            else:
                prom_groups.setdefault(trigger.url or self.prometheus_url, []).append((i, trigger))
        jobs = [
            self._fill(
                readings, [i for i, _ in group], url, self._read_redis(url, [t for _, t in group])
            )
            for url, group in redis_groups.items()
        ] + [
            self._fill(readings, [i for i, _ in group], url, self._read_prometheus(url, group))
            for url, group in prom_groups.items()
        ]
        await asyncio.gather(*jobs)
        return readings

    async def _read_redis(self, url: str | None, triggers: Sequence[RedisTrigger]) -> list[Reading]:
        return await self.redis(url).read(triggers)

    async def _read_prometheus(
        self, url: str | None, group: list[tuple[int, PrometheusTrigger]]
    ) -> list[Reading]:
        return await self.prometheus(url).read([trigger for _, trigger in group])

    @staticmethod
    async def _fill(
        out: list[Reading], indices: Sequence[int], url: str | None, read: Awaitable[list[Reading]]
    ) -> None:
        """Await one server's read into ``out``; any failure becomes failed readings."""
        try:
            results = await read
            if len(results) != len(indices):
                raise AutoscalerError(f"source answered {len(results)} readings for {len(indices)}")
        except AutoscalerError as e:
            results = [Reading.failed(str(e))] * len(indices)
        except Exception as e:  # a bug in one source must not stop the other servers
            server = redact_url(url) if url else "<none>"
            logger.exception("source read crashed server=%s", server)
            results = [Reading.failed(f"{server}: {type(e).__name__}: {e}")] * len(indices)
        for i, reading in zip(indices, results, strict=True):
            out[i] = reading

    async def aclose(self) -> None:
        """Close every source; the pool may be reused (sources are created again)."""
        sources: list[Source[RedisTrigger] | Source[PrometheusTrigger]] = [
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
