"""A redis-py client for one server: credentials from the environment, timeouts, one retry.

Used by the Redis source and by anything else of the controller that talks to Redis
(``autoscaler.sources.redis`` re-exports both names, the historical import path).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as rex
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.credentials import CredentialProvider

from autoscaler.errors import SourceError
from autoscaler.sources import EnvSecret, redact_url


class RedisCredentials(CredentialProvider):
    """Credentials from the controller's environment, never from an annotation's URL.

    ``REDIS_USERNAME`` (ACL user, optional) and ``REDIS_PASSWORD`` or
    ``REDIS_PASSWORD_FILE`` (see ``EnvSecret``). redis-py asks on every new connection,
    so a rotated Secret file is picked up. When set, they replace credentials in the URL.
    """

    def __init__(self, username: str | None, password: EnvSecret) -> None:
        self.username, self.password = username, password

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RedisCredentials:
        env = os.environ if environ is None else environ
        return cls(env.get("REDIS_USERNAME") or None, EnvSecret.from_env("REDIS_PASSWORD", env))

    @property
    def present(self) -> bool:
        return bool(self.username) or self.password.present

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        try:
            password = self.password.get() or ""
        except SourceError as e:
            raise rex.AuthenticationError(str(e)) from e
        return (self.username, password) if self.username else (password,)

    async def get_credentials_async(self) -> tuple[str] | tuple[str, str]:
        return self.get_credentials()


def make_client(
    url: str,
    credentials: RedisCredentials,
    *,
    connect_timeout_s: float = 2.0,
    read_timeout_s: float = 2.0,
    max_connections: int = 16,
    **extra: Any,
) -> aioredis.Redis:
    """A client with its own pool for one server; ``SourceError`` for a bad URL.

    Connections open lazily; past ``max_connections`` a caller waits up to the connect
    timeout for a free one. A source uses one per read; the rest is for other users.
    One immediate retry on a connection error: after a Redis restart the pooled
    connection is dead and the retry reconnects. Longer waits are ``Backoff``'s job.
    """
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": connect_timeout_s,
        "socket_timeout": read_timeout_s,
        "retry": Retry(NoBackoff(), 1, supported_errors=(rex.ConnectionError,)),
        "max_connections": max_connections,
        "timeout": connect_timeout_s,  # wait for a free pooled connection
        **extra,
    }
    if credentials.present:  # the environment's credentials replace the URL's
        scheme, sep, rest = url.partition("://")
        netloc, slash, tail = rest.partition("/")
        url = f"{scheme}{sep}{netloc.rpartition('@')[2]}{slash}{tail}"
        kwargs["credential_provider"] = credentials
    try:
        pool = aioredis.BlockingConnectionPool.from_url(url, **kwargs)
    except (ValueError, rex.RedisError) as e:
        shown = redact_url(url)
        detail = str(e) if shown == url else type(e).__name__  # str(e) may quote a password
        raise SourceError(f"{shown}: unusable redis url: {detail}") from e
    return aioredis.Redis.from_pool(pool)
