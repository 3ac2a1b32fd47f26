"""``KubeClient``: the one door to the Kubernetes API — throttled, retried, translated.

It sends ``kube.api``'s operations through one ``kube.transport`` (aiohttp) to the server
``kube.config`` reads from the kubeconfig or the pod's service account; responses stay
plain JSON dicts (``Obj``): no model round trip, and the status code is ours to judge.
Every call

- waits for the QPS/burst limiter (``TokenBucket``, client-go's: ``burst`` tokens, refilled
  at ``qps`` a second), foreground calls first (``Turns``);
- is retried with exponential backoff and jitter on 429 (honouring ``Retry-After``), 5xx
  and connection errors, at most ``max_attempts`` times in all;
- is counted in ``queue_autoscaler_kube_requests_total{verb, code}`` (``code`` is the HTTP
  status, or ``error`` when no response came);
- raises only ``KubeError`` subclasses (``autoscaler.errors``), ``from`` the original.

A 409 is not retried by ``call``: only a read-modify-write may re-read and try again, which
``read_modify_write`` does. Watches are opened with ``watch`` (an async context manager
yielding the events as dicts; an in-stream ``ERROR`` raises, e.g. ``KubeError(status=410)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from autoscaler.aio import guarded
from autoscaler.errors import KubeConflictError, KubeError, KubeTransientError, truncate
from autoscaler.logs import log_event
from autoscaler.metrics import ControllerMetrics
from autoscaler.remote import backoff_delay

from . import api, config
from .responses import Obj as Obj
from .responses import RetryAfterError, error_from_status, events
from .transport import Transport

logger = logging.getLogger(__name__)

ApiMethod = Callable[..., Awaitable[Any]]

# Kubernetes verbs by the prefix of the generated method's name (checked in this order).
_VERBS = (
    ("read_", "get"),
    ("list_", "list"),
    ("create_", "create"),
    ("replace_", "update"),
    ("patch_", "patch"),
    ("delete_collection_", "deletecollection"),
    ("delete_", "delete"),
)
MERGE_PATCH = "application/merge-patch+json"


@dataclass(frozen=True)
class ClientSettings:
    """How the controller talks to the API server.

    ``qps`` (requests/s, default 20) and ``burst`` (requests, default 40): the limiter lets
    ``burst`` requests through at once, then one every 1 / ``qps`` s — kubectl's 50/100 and
    client-go's 5/10 bracket it; 20/40 keeps a 10,000-workload controller polite while a
    scale-up still costs one request. ``max_attempts`` (default 5) bounds the tries of one
    call; the backoff starts at ``backoff_initial_s`` (0.2 s), doubles up to
    ``backoff_max_s`` (10 s), and never waits longer than ``retry_after_max_s`` (30 s) for
    a server's ``Retry-After``. ``request_timeout_s`` (30 s) bounds one request.
    """

    qps: float = 20.0
    burst: int = 40
    max_attempts: int = 5
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 10.0
    retry_after_max_s: float = 30.0
    request_timeout_s: float = 30.0


def verb_of(method: ApiMethod) -> str:
    name = getattr(method, "__name__", "")
    return next((verb for prefix, verb in _VERBS if name.startswith(prefix)), "other")


class TokenBucket:
    """client-go's rate limiter (``flowcontrol.NewTokenBucketRateLimiter``): ``burst``
    tokens, refilled continuously at ``qps`` a second; a request takes one, and waits for
    it when none is left. One taker at a time (``Turns``' holder).

    Not a sliding window (asyncio-throttle's, used here before): that one lets ``burst``
    requests through, then none until the oldest of them is ``burst / qps`` seconds old,
    so once the fleet's status writes filled a window a scale write waited up to 2 s for
    the next one, turn or not (backlog → /scale after a failover at 10,000: 2.2-2.4 s in
    3 runs of 4; docs/performance.md, goal 7). Here it waits for one token: 1 / qps."""

    def __init__(self, qps: float, burst: int) -> None:
        self.qps, self.burst = qps, burst
        self._tokens = float(burst)
        self._at: float | None = None  # loop time of the last refill

    async def take(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._at is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.qps)
        self._at = now
        self._tokens -= 1.0  # taken now, paid for by the wait below when owed
        if self._tokens < 0:
            await asyncio.sleep(-self._tokens / self.qps)


class Turns:
    """Whose turn it is at the rate limiter: every waiting foreground call before any
    background one (Events, status annotations), each lane in arrival order; one holder
    at a time.

    Only the holder waits at the limiter (``TokenBucket.take``). A scale or drain write
    therefore waits behind at most the one background write holding the turn, never
    behind the fleet's queued Events and statuses (docs/performance.md, goal 7).
    """

    def __init__(self) -> None:
        self._held = False
        self._lanes: tuple[deque[asyncio.Future[None]], ...] = (deque(), deque())

    async def acquire(self, background: bool = False) -> None:
        if not self._held and not any(self._lanes):
            self._held = True
            return
        turn = asyncio.get_running_loop().create_future()
        lane = self._lanes[background]
        lane.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # handed the turn, then cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    lane.remove(turn)
            raise

    def release(self) -> None:
        for lane in self._lanes:
            while lane:
                turn = lane.popleft()
                if not turn.done():
                    turn.set_result(None)  # still held: now by that waiter
                    return
        self._held = False


class KubeClient:
    """Throttled, retried access to the API; ``apps``/``core``/... are the generated APIs.

    Pass their *plain* methods to ``call``/``watch``:
    ``await kube.call(kube.apps.read_namespaced_deployment_scale, name, namespace)``.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        settings: ClientSettings | None = None,
        metrics: ControllerMetrics | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.transport = transport
        self.settings = settings or ClientSettings()
        self.metrics = metrics
        self.rng = rng or random.Random()
        s = self.settings
        self._limiter = TokenBucket(s.qps, s.burst)
        self._turns = Turns()  # foreground calls first, then background ones
        # The operations the controller sends, by the generated methods' names, without
        # the generated API classes (``kube.api``: they cost ~0.9 s and ~33 MB a start).
        self.apps: Any
        self.core: Any
        self.coordination: Any
        self.autoscaling: Any
        self.apps, self.core, self.coordination, self.autoscaling = api.build(transport)

    @classmethod
    async def connect(
        cls,
        kubeconfig: str | os.PathLike[str] | None = None,
        *,
        context: str | None = None,
        settings: ClientSettings | None = None,
        metrics: ControllerMetrics | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> KubeClient:
        """From ``kubeconfig``, else ``$KUBECONFIG``, else in-cluster, else ``~/.kube/config``
        (``kube.config``: kubectl's rules)."""
        connection = config.connection(kubeconfig, context, environ)
        kube = cls(Transport(connection), settings=settings, metrics=metrics)
        s = kube.settings
        log_event(logger, "kube client", host=connection.server, qps=s.qps, burst=s.burst)
        return kube

    async def close(self) -> None:
        await self.transport.aclose()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ---- one request ----------------------------------------------------------------

    def _count(self, verb: str, code: str) -> None:
        if self.metrics is not None:
            self.metrics.kube_requests.labels(verb, code).inc()

    async def _send(
        self,
        verb: str,
        method: ApiMethod,
        args: Any,
        kwargs: Any,
        throttled: bool = True,
        background: bool = False,
    ) -> Any:
        """Throttle, send, and return the aiohttp response (any status)."""
        if throttled:
            await self._turns.acquire(background)
            try:
                await self._limiter.take()
            finally:
                self._turns.release()
        kwargs.setdefault("_request_timeout", self.settings.request_timeout_s)
        what = f"{verb} {getattr(method, '__name__', '?')}"
        try:
            return await guarded(method(*args, **kwargs))
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            self._count(verb, "error")
            raise KubeTransientError(f"{what}: {type(e).__name__}: {e}") from e

    async def _once(
        self,
        verb: str,
        method: ApiMethod,
        args: Any,
        kwargs: Any,
        throttled: bool,
        background: bool,
    ) -> Obj:
        response = await self._send(verb, method, args, dict(kwargs), throttled, background)
        try:
            text = (await response.read()).decode()
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            self._count(verb, "error")
            raise KubeTransientError(f"{verb}: reading the response: {e}") from e
        finally:
            response.release()
        self._count(verb, str(response.status))
        if response.status >= 400:
            what = f"{verb} {response.url.path}"
            raise error_from_status(
                response.status, text, what, response.headers.get("Retry-After")
            )
        try:
            body: Obj = json.loads(text) if text else {}
            return body
        except ValueError as e:
            raise KubeError(f"{verb}: the response is not JSON: {truncate(text)}") from e

    def _delay(self, attempt: int, error: KubeTransientError) -> float:
        s = self.settings
        delay = backoff_delay(attempt, s.backoff_initial_s, s.backoff_max_s, self.rng)
        if isinstance(error, RetryAfterError) and error.retry_after_s is not None:
            delay = max(delay, min(error.retry_after_s, s.retry_after_max_s))
        return delay

    async def call(
        self,
        method: ApiMethod,
        /,
        *args: Any,
        throttled: bool = True,
        background: bool = False,
        **kwargs: Any,
    ) -> Obj:
        """Call a generated API method; retry what may succeed later; return the JSON body.

        ``throttled=False`` skips the QPS limiter: for the Lease only (one request per retry
        period), so a queue of workload writes never delays a renewal past its deadline.
        ``background=True``: what may wait (Events, status annotations) — it takes its turn
        at the limiter only when no other call waits (``Turns``).
        """
        verb = verb_of(method)
        attempts = self.settings.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                return await self._once(verb, method, args, kwargs, throttled, background)
            except KubeTransientError as e:
                if attempt >= attempts:
                    raise
                delay = self._delay(attempt, e)
                log_event(
                    logger,
                    "kube retry",
                    logging.DEBUG,
                    verb=verb,
                    attempt=attempt,
                    delay_s=round(delay, 3),
                    error=str(e),
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def read_modify_write(
        self, read: Callable[[], Awaitable[Obj]], write: Callable[[Obj], Awaitable[Obj]]
    ) -> Obj:
        """``write(read())``, re-reading and writing again on 409 Conflict (bounded)."""
        attempts = self.settings.max_attempts
        for attempt in range(1, attempts + 1):
            current = await read()
            try:
                return await write(current)
            except KubeConflictError as e:
                if attempt >= attempts:
                    raise
                log_event(logger, "kube conflict", logging.DEBUG, attempt=attempt, error=str(e))
                s = self.settings
                await asyncio.sleep(
                    backoff_delay(attempt, s.backoff_initial_s / 4, s.backoff_max_s, self.rng)
                )
        raise AssertionError("unreachable")  # pragma: no cover

    # ---- watches --------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def watch(
        self, method: ApiMethod, /, *args: Any, timeout_s: float, **kwargs: Any
    ) -> AsyncIterator[AsyncIterator[Obj]]:
        """Open a watch (``timeout_s``: the server ends it after that); yield its events.

        The connection is not retried here: the caller resumes from its resourceVersion.
        """
        kwargs.update(watch=True, timeout_seconds=int(timeout_s))
        # The client's own deadline must outlast the server's, or every watch ends in error.
        kwargs["_request_timeout"] = timeout_s + self.settings.request_timeout_s
        response = await self._send("watch", method, args, kwargs)
        try:
            self._count("watch", str(response.status))
            if response.status >= 400:
                text = (await response.read()).decode()
                raise error_from_status(response.status, text, f"watch {response.url.path}")
            yield events(response)
        finally:
            response.close()  # mid-stream: drop the connection, never reuse it
