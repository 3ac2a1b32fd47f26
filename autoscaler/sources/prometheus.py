"""The Prometheus source: one instant query per distinct query, run concurrently (bounded).

A query must answer a scalar or a one-element vector. An empty vector, NaN or ±Inf is
*unknown* — a failed reading, never zero: KEDA read a Prometheus outage as an idle queue
and scaled production to its minimum at peak (#3065). More than one series is an error
that names the query (aggregate it in the annotation, e.g. ``sum(...)``).

Auth comes from the controller's environment: ``PROMETHEUS_BEARER_TOKEN`` or
``PROMETHEUS_BEARER_TOKEN_FILE`` (wins over basic auth), else ``PROMETHEUS_USERNAME`` with
``PROMETHEUS_PASSWORD`` or ``PROMETHEUS_PASSWORD_FILE``. Files are re-read per request,
so a rotated token is picked up. They win over credentials in the URL's userinfo, which
are sent as basic auth only when the environment sets none.

The transport is aiohttp, like ``kube`` and the sidecar: one HTTP library in the process,
not two (httpx added ~4.5 MB of RSS and ~50 ms of import to the controller's other
imports; docs/performance.md, goal 5). ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` are
honoured (read once: ``remote.environment_proxy``); ``.netrc`` is not read. TLS verifies
against the system's CA store (``SSL_CERT_FILE``/``SSL_CERT_DIR`` honoured).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import os
import urllib.parse
from collections.abc import Mapping, Sequence

import aiohttp

from autoscaler.aio import guarded
from autoscaler.errors import SourceError, truncate
from autoscaler.policy.spec import PrometheusTrigger
from autoscaler.policy.state import Reading
from autoscaler.remote import Backoff, EnvSecret, environment_proxy, redact_url

logger = logging.getLogger(__name__)

_QUERY_CHARS = 200  # a query is named in errors, cut to this length


class _Unusable(ValueError):
    """The response does not give one finite number; the message says why."""


def parse_value(status_code: int, body: str) -> float:
    """The one finite number in an instant-query response, or ``_Unusable``."""
    if not 200 <= status_code < 300:
        raise _Unusable(f"HTTP {status_code}: {truncate(body)}")
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        raise _Unusable(f"not JSON: {truncate(body)}") from None
    if not isinstance(doc, dict) or doc.get("status") != "success":
        raise _Unusable(f"not a success response: {truncate(body)}")
    data = doc.get("data")
    kind = data.get("resultType") if isinstance(data, dict) else None
    result = data.get("result") if isinstance(data, dict) else None
    if kind == "scalar":
        sample = result
    elif kind == "vector" and isinstance(result, list):
        if not result:
            raise _Unusable("empty result (no series): unknown, not zero")
        if len(result) > 1:
            raise _Unusable(f"{len(result)} series, expected one: aggregate it, e.g. sum(...)")
        sample = result[0].get("value") if isinstance(result[0], dict) else None
    else:
        raise _Unusable(f"result type {truncate(repr(kind), 40)}, expected scalar or vector")
    if not (isinstance(sample, list) and len(sample) == 2 and isinstance(sample[1], str)):
        raise _Unusable(f"malformed sample: {truncate(repr(sample), 80)}")
    try:
        value = float(sample[1])
    except ValueError:
        raise _Unusable(f"not a number: {truncate(repr(sample[1]), 40)}") from None
    if not math.isfinite(value):
        raise _Unusable(f"value {sample[1]}: unknown, not zero")
    return value


def reading_from_response(server: str, query: str, status_code: int, body: str) -> Reading:
    """Always a ``Reading``: the value, or failed naming the server, the query and why."""
    try:
        return Reading(value=parse_value(status_code, body))
    except _Unusable as e:
        return Reading.failed(f"{server}: query {truncate(query, _QUERY_CHARS)!r}: {e}")


class PrometheusAuth:
    """Bearer or basic auth from the environment, read at each request (see module doc)."""

    def __init__(
        self, token: EnvSecret, username: str | None = None, password: EnvSecret | None = None
    ) -> None:
        self.token, self.username = token, username
        self.password = password or EnvSecret("PROMETHEUS_PASSWORD")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PrometheusAuth | None:
        """None when the environment sets no Prometheus credentials."""
        env = os.environ if environ is None else environ
        token = EnvSecret.from_env("PROMETHEUS_BEARER_TOKEN", env)
        username = env.get("PROMETHEUS_USERNAME") or None
        if not token.present and username is None:
            return None
        return cls(token, username, EnvSecret.from_env("PROMETHEUS_PASSWORD", env))

    def header(self) -> str | None:
        """The ``Authorization`` value for the next request, or None; secret files are read
        now, so a rotated one is picked up. ``SourceError`` if a file cannot be read. The
        value holds the secret: it goes into the request only, never into a log line."""
        if token := self.token.get():
            return f"Bearer {token}"
        if self.username is not None:
            pair = f"{self.username}:{self.password.get() or ''}".encode()
            return f"Basic {base64.b64encode(pair).decode()}"
        return None


def _without_userinfo(url: str) -> str:
    """``url`` without ``user:password@``: aiohttp refuses an ``Authorization`` header
    beside credentials in the URL, and the environment's auth wins over them."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return url  # not a URL: the request fails, as a reading naming the server
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


class PrometheusSource:
    """All Prometheus triggers of one server.

    ``session`` may be injected (it is then not closed here); otherwise one
    ``aiohttp.ClientSession`` is created for this server at its first query (a session
    belongs to the running loop, and the pool may make a source before there is one).
    ``timeout_s`` (default 5 s) bounds each query end to end; at most ``max_concurrency``
    (default 8) queries run at once. ``auth`` defaults to ``PrometheusAuth.from_env()``.
    """

    def __init__(
        self,
        url: str,
        *,
        session: aiohttp.ClientSession | None = None,
        auth: PrometheusAuth | None = None,
        timeout_s: float = 5.0,
        max_concurrency: int = 8,
        backoff: Backoff | None = None,
    ) -> None:
        self.server = redact_url(url)
        self._endpoint = url.rstrip("/") + "/api/v1/query"
        self._endpoint_for_auth = _without_userinfo(self._endpoint)
        self._owns_session = session is None
        self._session = session
        self._auth = auth if auth is not None else PrometheusAuth.from_env()
        self._timeout_s = timeout_s
        self._limit = asyncio.Semaphore(max_concurrency)
        self._backoff = backoff or Backoff()
        self._proxy = environment_proxy(url)

    async def read(self, triggers: Sequence[PrometheusTrigger]) -> list[Reading]:
        """One reading per trigger; each distinct query is sent once. Raises nothing."""
        queries = list(dict.fromkeys(t.query for t in triggers))
        readings = await guarded(asyncio.gather(*(self._query(q) for q in queries)))
        by_query = dict(zip(queries, readings, strict=True))
        return [by_query[t.query] for t in triggers]

    async def _query(self, query: str) -> Reading:
        shown = truncate(query, _QUERY_CHARS)
        async with self._limit:
            # Checked inside the limit: queries queued behind a failing one fail at once.
            if waiting := self._backoff.blocked():
                return Reading.failed(f"{waiting}; query {shown!r} not sent")
            try:
                async with asyncio.timeout(self._timeout_s):
                    status, body = await self._get(query)
            # ValueError: what aiohttp refuses before sending (a URL, a header value)
            except (TimeoutError, aiohttp.ClientError, ValueError, SourceError) as e:
                return self._failed(shown, e)
        if ended := self._backoff.succeeded():
            logger.info("prometheus recovered server=%s after_failures=%d", self.server, ended)
        return reading_from_response(self.server, query, status, body)

    async def _get(self, query: str) -> tuple[int, str]:
        """One instant query: the status and the body (undecodable bytes replaced, so a
        garbled body is a failed reading, not an exception)."""
        endpoint, headers = self._endpoint, None
        if self._auth is not None and (value := self._auth.header()) is not None:
            endpoint, headers = self._endpoint_for_auth, {"Authorization": value}
        if self._session is None:
            # No timeout of aiohttp's own: ``timeout_s`` around the whole query is the one
            # bound, so its error always names it.
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout())
        get = self._session.get
        async with get(endpoint, params={"query": query}, headers=headers, proxy=self._proxy) as r:
            return r.status, await r.text(errors="replace")

    def _failed(self, shown: str, error: Exception) -> Reading:
        """A transport failure: the server is unreachable, so back off for all queries."""
        if isinstance(error, TimeoutError) and not isinstance(error, aiohttp.ClientError):
            problem = f"timed out after {self._timeout_s:g} s"
        elif isinstance(error, aiohttp.InvalidURL | aiohttp.NonHttpUrlClientError):
            # not str(error): it is the URL, password and all (the server is named redacted)
            problem = f"{type(error).__name__}: not a valid http(s) URL"
        else:
            problem = f"{type(error).__name__}: {truncate(str(error), 200)}"
        server_error = f"{self.server}: {problem}"
        delay = self._backoff.failed(server_error)
        logger.warning("prometheus query failed failures=%d retry_in_s=%.2f error=%s",
                       self._backoff.failures, delay, server_error)  # fmt: skip
        return Reading.failed(f"{server_error}; query {shown!r}")

    async def aclose(self) -> None:
        """Close the session if this source created it."""
        if self._owns_session and self._session is not None:
            session, self._session = self._session, None
            await session.close()
