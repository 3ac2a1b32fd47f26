"""The one Redis client factory, and the one way to run a Lua script.

Every Redis client of the project — the controller's sources, drain protocol and reaper,
the sidecar consumer, the demo, ``dead-letter`` — is built by ``make_client``: one place
for the server (standalone, Sentinel or Cluster, see ``autoscaler.endpoint``), the
credentials and TLS material, the timeouts and redis-py's own retry, so that they cannot
drift apart.

Credentials never come from a URL written in an annotation. They are a
``RedisCredentials``, built either

- from the process environment (``RedisCredentials.from_env``; the sidecar, the demo,
  ``dead-letter``, and the controller for workloads without ``redis-auth-secret``):
  ``REDIS_USERNAME`` (ACL user), ``REDIS_PASSWORD`` or ``REDIS_PASSWORD_FILE`` (a mounted
  Secret, re-read on every new connection so a rotation is picked up), ``REDIS_CA_FILE``
  (the CA a ``rediss://`` server is verified against; without it, the system store),
  ``REDIS_CERT_FILE``/``REDIS_KEY_FILE`` (a client certificate),
  ``REDIS_SENTINEL_USERNAME`` and ``REDIS_SENTINEL_PASSWORD`` (or ``…_FILE``: for
  sentinels that need a password; the master's credentials are not sent to them); or
- from a Kubernetes Secret (``RedisCredentials.from_secret``; the controller, for a
  workload's ``redis-auth-secret``), with the keys ``username``, ``password``, ``ca.crt``,
  ``tls.crt``, ``tls.key``, ``sentinel-username``, ``sentinel-password``.

When present they replace any user info in the URL. TLS always verifies the server's
certificate and name: there is no skip-verify. ``origin`` names where the credentials
came from (a Secret, or the variables), and connection errors carry it, so a wrong
password or CA points at the thing to fix; a value is never shown. A URL is only ever
shown redacted (``autoscaler.remote.redact_url``).

``Script`` runs a Lua script by its SHA-1 (``EVALSHA``) and sends the source (``EVAL``)
only when the server answers ``NOSCRIPT``: after its restart or a ``SCRIPT FLUSH``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import shutil
import tempfile
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as rex
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, ConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.credentials import CredentialProvider

from autoscaler.endpoint import RedisEndpoint
from autoscaler.errors import InputError, SourceError
from autoscaler.remote import EnvSecret, redact_url

_ENV_NAMES = ("REDIS_USERNAME", "REDIS_PASSWORD", "REDIS_PASSWORD_FILE", "REDIS_CA_FILE",
              "REDIS_CERT_FILE", "REDIS_KEY_FILE", "REDIS_SENTINEL_USERNAME",
              "REDIS_SENTINEL_PASSWORD", "REDIS_SENTINEL_PASSWORD_FILE")  # fmt: skip
# The keys of a ``redis-auth-secret`` Secret (all optional).
SECRET_KEYS = ("username", "password", "ca.crt", "tls.crt", "tls.key", "sentinel-username",
               "sentinel-password")  # fmt: skip


class RedisCredentials(CredentialProvider):
    """Credentials and TLS material for one server (see the module docstring).

    redis-py asks for the username and password on every new connection, so a rotated
    password file is picked up. ``origin`` names where they come from, for errors.
    """

    def __init__(
        self,
        username: str | None,
        password: EnvSecret,
        *,
        ca_file: str | None = None,
        ca_data: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        origin: str = "the environment",
        sentinel_username: str | None = None,
        sentinel_password: EnvSecret | None = None,
    ) -> None:
        self.username, self.password = username, password
        self.sentinel_username, self.sentinel_password = sentinel_username, sentinel_password
        self.ca_file, self.ca_data = ca_file, ca_data
        self.cert_file, self.key_file = cert_file, key_file
        self.origin = origin
        self.folder: str | None = None  # the private directory of files written for a Secret

    def remove_files(self) -> None:
        """Delete the files written for a Secret (its client is closed)."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RedisCredentials:
        env = os.environ if environ is None else environ
        names = [n for n in _ENV_NAMES if env.get(n)]
        return cls(
            env.get("REDIS_USERNAME") or None,
            EnvSecret.from_env("REDIS_PASSWORD", env),
            ca_file=env.get("REDIS_CA_FILE") or None,
            cert_file=env.get("REDIS_CERT_FILE") or None,
            key_file=env.get("REDIS_KEY_FILE") or None,
            origin=" ".join(_env_origin(n, env) for n in names) or "no credentials",
            sentinel_username=env.get("REDIS_SENTINEL_USERNAME") or None,
            sentinel_password=EnvSecret.from_env("REDIS_SENTINEL_PASSWORD", env),
        )

    @classmethod
    def from_secret(cls, data: Mapping[str, bytes], origin: str) -> RedisCredentials:
        """From a Secret's decoded ``data``. A client certificate and key are written to a
        private (0700) temporary directory: the TLS library reads them only from files.
        ``InputError`` for a key that is not UTF-8 text."""
        text: dict[str, str] = {}
        for key in SECRET_KEYS:
            if key in data:
                try:
                    text[key] = data[key].decode()
                except UnicodeDecodeError:
                    raise InputError(f"{origin}: key {key} is not UTF-8 text") from None
        cert_file = key_file = folder = None
        if "tls.crt" in text or "tls.key" in text:
            folder = tempfile.mkdtemp(prefix="redis-tls-")  # mode 0700
            cert_file, key_file = _write(folder, "tls.crt", text), _write(folder, "tls.key", text)
        password = text.get("password", "").removesuffix("\n") or None
        sentinel_password = text.get("sentinel-password", "").removesuffix("\n") or None
        credentials = cls(
            text.get("username", "").strip() or None,
            EnvSecret(f"{origin} key password", password),
            ca_data=text.get("ca.crt") or None,
            cert_file=cert_file,
            key_file=key_file,
            origin=origin,
            sentinel_username=text.get("sentinel-username", "").strip() or None,
            sentinel_password=EnvSecret(f"{origin} key sentinel-password", sentinel_password),
        )
        credentials.folder = folder
        return credentials

    @property
    def present(self) -> bool:
        return bool(self.username) or self.password.present

    def for_sentinels(self) -> RedisCredentials | None:
        """What the sentinels are sent: their own user and password, if any (a password-less
        sentinel refuses an AUTH, so the master's are never sent to it)."""
        password = self.sentinel_password or EnvSecret("sentinel password", None)
        if not (self.sentinel_username or password.present):
            return None
        return RedisCredentials(self.sentinel_username, password, origin=self.origin)

    def tls_options(self) -> dict[str, Any]:
        """redis-py's ``ssl_*`` options: always verify the server (certificate and name)."""
        options: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
        if self.ca_file:
            options["ssl_ca_certs"] = self.ca_file
        if self.ca_data:
            options["ssl_ca_data"] = self.ca_data
        if self.cert_file:
            options["ssl_certfile"] = self.cert_file
        if self.key_file:
            options["ssl_keyfile"] = self.key_file
        return options

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        try:
            password = self.password.get() or ""
        except SourceError as e:
            raise rex.AuthenticationError(str(e)) from e
        return (self.username, password) if self.username else (password,)

    async def get_credentials_async(self) -> tuple[str] | tuple[str, str]:
        return self.get_credentials()


def _env_origin(name: str, env: Mapping[str, str]) -> str:
    """A variable as an error names it: a file variable with its path, never a value."""
    return f"{name}={env[name]}" if name.endswith("_FILE") else name


def _write(folder: str, key: str, text: Mapping[str, str]) -> str | None:
    if key not in text:
        return None
    path = os.path.join(folder, key)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text[key])
    return path


def credential_hint(error: BaseException, origin: str) -> str:
    """`` (credentials from …)`` when ``error`` may come from the credentials or the CA
    (authentication, TLS), else nothing: points at what to fix, never at a value."""
    text = f"{type(error).__name__}: {error}".lower()
    if is_auth_error(error) or any(w in text for w in ("noauth", "noperm", "authentication")):
        return f" (credentials from {origin})"
    if any(word in text for word in ("certificate", "ssl", "tls")):
        return f" (TLS: CA and client certificate from {origin})"
    return ""


AnyRedis = aioredis.Redis | RedisCluster


class _LeanPoolMixin:
    """redis-py's pool, without a lock or a timer while a connection is free.

    ``BlockingConnectionPool`` enters an ``asyncio.Condition``, an ``asyncio.timeout`` and
    an ``asyncio.Lock`` for every command, plus redis-py's pool observability hooks, even
    when a connection is free: 40–75 µs of CPU per message for the sidecar at 8–32 slots
    (``bench/bench_consumer.py``). All of a pool's users run on one event loop, so taking
    a free connection (or making one below ``max_connections``) is a few plain steps with
    no await between the check and the take, and needs no lock. Past ``max_connections`` a
    caller waits, first come first served, up to ``timeout`` seconds, then gets
    ``ConnectionError("No connection available.")`` as from ``BlockingConnectionPool``; a
    released connection is handed straight to the oldest waiter. Each connection is still
    checked before use (``ensure_connection``: reconnect when dead or holding unread data).

    Not used: what redis-py runs under its pool lock for RESP3 maintenance notifications
    and for streaming (token) credential providers; this project uses neither.
    """

    _available_connections: list[AbstractConnection]
    _in_use_connections: set[AbstractConnection]
    max_connections: int

    def __init__(self, *args: Any, timeout: float | None = 20.0, **kwargs: Any) -> None:
        self.timeout = timeout
        self._waiters: deque[asyncio.Future[AbstractConnection]] = deque()
        super().__init__(*args, **kwargs)

    async def get_connection(
        self, command_name: str | None = None, *keys: Any, **options: Any
    ) -> AbstractConnection:
        pool: Any = self  # the ConnectionPool this is mixed into
        if self._available_connections or len(self._in_use_connections) < self.max_connections:
            connection: AbstractConnection = pool.get_available_connection()
        else:
            connection = await self._wait_for_connection()
        try:
            await pool.ensure_connection(connection)
        except BaseException:
            await self.release(connection)
            raise
        return connection

    async def _wait_for_connection(self) -> AbstractConnection:
        waiter: asyncio.Future[AbstractConnection] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.timeout):
                try:
                    return await waiter
                except BaseException:
                    if waiter.done() and not waiter.cancelled():  # handed over as we left
                        self._free(waiter.result())
                    waiter.cancel()
                    raise
        except TimeoutError:
            raise rex.ConnectionError("No connection available.") from None

    async def release(self, connection: AbstractConnection) -> None:
        marked: Any = connection.should_reconnect  # untyped in redis-py
        try:
            if marked():  # by a maintenance notification
                await connection.disconnect()
        finally:
            self._free(connection)

    def _free(self, connection: AbstractConnection) -> None:
        self._in_use_connections.remove(connection)  # KeyError if not ours, as redis-py
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # not timed out or cancelled
                self._in_use_connections.add(connection)
                waiter.set_result(connection)
                return
        self._available_connections.append(connection)


class LeanPool(_LeanPoolMixin, ConnectionPool):
    """``make_client(lean_pool=True)``'s pool for one server (see ``_LeanPoolMixin``)."""


class LeanSentinelPool(_LeanPoolMixin, SentinelConnectionPool):
    """``make_client(lean_pool=True)``'s pool for a Sentinel-managed master."""


def make_client(
    url: str,
    credentials: RedisCredentials | None = None,
    *,
    connect_timeout_s: float = 2.0,
    read_timeout_s: float | None = 2.0,
    max_connections: int = 16,
    lean_pool: bool = False,
    **extra: Any,
) -> aioredis.Redis:
    """A client with its own pool for one server; ``SourceError`` for a bad URL.

    ``url`` is a server as ``autoscaler.endpoint`` folds it: a plain URL, a Cluster node
    (``?cluster=true``: a ``RedisCluster``, typed as ``Redis`` for the callers: it has the
    same commands, routed by key) or sentinels (``redis+sentinel://``: a client of the
    current master that follows a failover). ``credentials`` None: from the environment.
    Connections open lazily; past ``max_connections`` a caller waits up to the connect
    timeout for a free one. ``read_timeout_s`` None: no socket timeout (a client whose
    blocking commands carry their own timeout). One immediate retry on a connection
    error: after a Redis restart or a failover the pooled connection is dead and the retry
    reconnects (to the new master). A timeout is not retried here (the command may have
    run); longer outages are the caller's to back off from.

    ``lean_pool``: the same waiting and limits without a lock or a timer per command
    (``LeanPool``), for a client that runs many short commands (the sidecar: a message
    is one script). Off by default: the controller keeps redis-py's
    ``BlockingConnectionPool``. A Cluster client has its own per-node pools: ignored.
    """
    credentials = RedisCredentials.from_env() if credentials is None else credentials
    try:
        endpoint = RedisEndpoint.unfold(url)
    except ValueError as e:
        raise SourceError(f"{redact_url(url)}: unusable redis server: {e}") from None
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": connect_timeout_s,
        "socket_timeout": read_timeout_s,
        "retry": Retry(NoBackoff(), 1, supported_errors=(rex.ConnectionError,)),
        **extra,
    }
    if credentials.present:  # the credentials replace the URL's
        kwargs["credential_provider"] = credentials
    try:
        if endpoint.sentinels:
            lean = {"connection_pool_class": LeanSentinelPool, "timeout": connect_timeout_s}
            return _sentinel_client(endpoint, credentials, kwargs, max_connections,
                                    lean if lean_pool else {})  # fmt: skip
        target = endpoint.url or ""
        if credentials.present:
            scheme, sep, rest = target.partition("://")
            netloc, slash, tail = rest.partition("/")
            target = f"{scheme}{sep}{netloc.rpartition('@')[2]}{slash}{tail}"
        if target.startswith("rediss://"):
            kwargs.update(credentials.tls_options())
        if endpoint.cluster:
            return _cluster_client(target, kwargs, max_connections)  # type: ignore[return-value]
        kwargs["max_connections"] = max_connections
        kwargs["timeout"] = connect_timeout_s  # wait for a free pooled connection
        pool_class = LeanPool if lean_pool else aioredis.BlockingConnectionPool
        pool = pool_class.from_url(target, **kwargs)
    except (ValueError, rex.RedisError) as e:
        shown = redact_url(url)
        detail = str(e) if shown == url else type(e).__name__  # str(e) may quote a password
        raise SourceError(f"{shown}: unusable redis url: {detail}") from e
    return aioredis.Redis.from_pool(pool)


def _cluster_client(url: str, kwargs: dict[str, Any], max_connections: int) -> RedisCluster:
    """A Cluster client: commands routed by key slot, MOVED/ASK followed. A database other
    than 0 is refused (Cluster has one database; silently using 0 would read the wrong
    data), as the annotations refuse it before."""
    db = url.partition("://")[2].partition("/")[2].partition("?")[0]
    if db not in ("", "0"):
        raise ValueError(f"Redis Cluster has only database 0, the URL names {db}")
    return RedisCluster.from_url(url, max_connections=max_connections, **kwargs)


def _sentinel_client(
    endpoint: RedisEndpoint,
    credentials: RedisCredentials,
    kwargs: dict[str, Any],
    max_connections: int,
    pool: dict[str, Any],
) -> aioredis.Redis:
    """The master of ``endpoint.sentinel_master``, found through the sentinels and found
    again after a failover (a READONLY reply or a dead connection). The sentinels are
    asked with the same timeouts, over TLS with ``rediss+sentinel://`` (verified against
    the same CA as the master), with their own credentials if any; the master gets the
    master's credentials. ``pool``: the pool class and its options, if not redis-py's."""
    tls = credentials.tls_options() if endpoint.sentinel_tls else {}
    sentinel_kwargs = {k: v for k, v in kwargs.items() if k.startswith("socket_")}
    if (auth := credentials.for_sentinels()) is not None:
        sentinel_kwargs["credential_provider"] = auth
    if endpoint.sentinel_tls:
        sentinel_kwargs.update(ssl=True, **tls)
    sentinel = Sentinel(list(endpoint.sentinels), sentinel_kwargs=sentinel_kwargs,
                        ssl=endpoint.sentinel_tls, **tls, **kwargs)  # fmt: skip
    client: _SentinelMaster = sentinel.master_for(
        endpoint.sentinel_master or "", redis_class=_SentinelMaster,
        max_connections=max_connections, **pool,
    )  # fmt: skip
    client.sentinel_clients = list(sentinel.sentinels)
    return client


class _SentinelMaster(aioredis.Redis):
    """The master's client. It owns the sentinels' clients too: closing it closes their
    connections (redis-py leaves them open)."""

    sentinel_clients: list[aioredis.Redis]

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        for sentinel in getattr(self, "sentinel_clients", ()):
            await sentinel.aclose()


class Script:
    """A Lua script run by ``EVALSHA``, loaded on ``NOSCRIPT``; not bound to one client."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest()

    async def __call__(self, redis: aioredis.Redis, keys_: Sequence[str], args: list[Any]) -> Any:
        """Run it once; redis-py errors propagate (the caller translates them)."""
        try:
            return await redis.evalsha(self.sha, len(keys_), *keys_, *args)
        except rex.NoScriptError:
            return await redis.eval(self.source, len(keys_), *keys_, *args)

    async def many(self, redis: aioredis.Redis, calls: Sequence[Sequence[Any]]) -> list[Any]:
        """Many calls without keys in one round trip (a pipeline, not a transaction): each
        reply, or its error, in its place. On ``NOSCRIPT`` all are sent again with the first
        as ``EVAL`` (it loads the script for the rest): only for a read-only script."""
        replies = await self._pipeline(redis, calls, load=False)
        if any(isinstance(reply, rex.NoScriptError) for reply in replies):
            replies = await self._pipeline(redis, calls, load=True)
        return replies

    async def _pipeline(
        self, redis: aioredis.Redis, calls: Sequence[Sequence[Any]], *, load: bool
    ) -> list[Any]:
        pipe = redis.pipeline(transaction=False)
        for i, args in enumerate(calls):
            if load and i == 0:
                pipe.execute_command("EVAL", self.source, 0, *args)
            else:
                pipe.execute_command("EVALSHA", self.sha, 0, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies


SecretLookup = Callable[[str, str], Awaitable[Mapping[str, bytes]]]
SECRET_TTL_S = 60.0


class SecretClient:
    """The client of a server whose credentials are a Kubernetes Secret (``auth-secret``).

    The Secret is read (``lookup``: one ``get``) before the first use, again once
    ``ttl_s`` has passed, and at the next use after ``invalidate`` (an authentication
    error: the password may have been rotated). When its content changed, a new client is
    built with it (a new password or CA applies to new connections only, and a pool
    cannot change its TLS material); the old one is closed at the next change, not at once,
    so a drain still using it is not cut off. A failed read raises ``SourceError`` (the
    lookup names the Secret and the fix) and is tried again at the next use.
    """

    def __init__(
        self,
        url: str,
        lookup: SecretLookup,
        *,
        ttl_s: float = SECRET_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        **client_options: Any,
    ) -> None:
        endpoint = RedisEndpoint.unfold(url)
        namespace, _, name = (endpoint.secret or "").rpartition("/")
        if not namespace or not name:
            raise SourceError(
                f"{redact_url(url)}: redis-auth-secret {endpoint.secret} needs the workload's "
                "namespace (a Secret is read only for a workload in Kubernetes)"
            )
        self.url, self.namespace, self.name = url, namespace, name
        self._lookup, self._ttl_s, self._clock = lookup, ttl_s, clock
        self._options = client_options
        self._client: aioredis.Redis | None = None
        self._retired: aioredis.Redis | None = None
        self._files: list[RedisCredentials] = []  # of the current and the retired client
        self._digest: str | None = None
        self._fetched_at = -math.inf
        self._lock = asyncio.Lock()

    @property
    def current(self) -> aioredis.Redis | None:
        """The client built from the last read of the Secret, if any."""
        return self._client

    def invalidate(self) -> None:
        """Read the Secret again at the next use (after an authentication error)."""
        self._fetched_at = -math.inf

    async def get(self) -> aioredis.Redis:
        """The client, reading the Secret first when due; ``SourceError`` otherwise."""
        if self._client is not None and self._clock() - self._fetched_at < self._ttl_s:
            return self._client
        async with self._lock:
            if self._client is not None and self._clock() - self._fetched_at < self._ttl_s:
                return self._client
            data = await self._lookup(self.namespace, self.name)
            self._fetched_at = self._clock()
            digest = hashlib.sha256(
                b"\0".join(k.encode() + b"=" + v for k, v in sorted(data.items())),
            ).hexdigest()
            if self._client is None or digest != self._digest:
                origin = f"Secret {self.namespace}/{self.name}"
                credentials = RedisCredentials.from_secret(data, origin)
                client = make_client(self.url, credentials, **self._options)
                if self._retired is not None:
                    await _close_quietly(self._retired)
                while len(self._files) > 1:  # the retired client's files: it is closed
                    self._files.pop(0).remove_files()
                self._files.append(credentials)
                self._retired, self._client, self._digest = self._client, client, digest
            return self._client

    async def aclose(self) -> None:
        for client in (self._client, self._retired):
            if client is not None:
                await _close_quietly(client)
        self._client = self._retired = None
        for credentials in self._files:
            credentials.remove_files()
        self._files.clear()


async def _close_quietly(client: aioredis.Redis) -> None:
    with contextlib.suppress(rex.RedisError, OSError):
        await client.aclose()


def is_auth_error(error: BaseException) -> bool:
    """Did the server refuse the credentials (wrong or rotated password, unknown user)?"""
    text = str(error).upper()
    return isinstance(error, rex.AuthenticationError) or any(
        word in text for word in ("WRONGPASS", "NOAUTH", "INVALID PASSWORD")
    )
