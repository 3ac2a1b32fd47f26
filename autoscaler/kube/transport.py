"""One HTTP connection pool to the API server (aiohttp), with the connection's TLS,
credentials and proxy: what ``kube.api``'s operations send through.

A 401 asks the credentials to refresh (a rotated token file, an expired plugin token) and,
when that may help, sends the request once more, as client-go does.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from autoscaler.remote import environment_proxy

from .config import Connection

POOL_SIZE = 100  # connections to the API server (the kubernetes client's default)


class Transport:
    """Requests to ``connection.server``; the session is made on first use (in the loop)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._session: aiohttp.ClientSession | None = None
        # read once, not aiohttp's trust_env per request: see environment_proxy
        self._proxy = connection.proxy or environment_proxy(connection.server)

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            ssl = self.connection.ssl_context or False
            connector = aiohttp.TCPConnector(limit=POOL_SIZE, ssl=ssl)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]],
        headers: dict[str, str],
        body: bytes | None,
        timeout_s: float | None,
    ) -> aiohttp.ClientResponse:
        """Send; return the response (any status) with its body unread."""
        session, c = self._open(), self.connection
        options: dict[str, Any] = {"params": query, "data": body, "allow_redirects": False}
        if timeout_s is not None:
            options["timeout"] = aiohttp.ClientTimeout(total=timeout_s)
        if c.tls_server_name:
            options["server_hostname"] = c.tls_server_name
        if self._proxy:
            options["proxy"] = self._proxy
        for attempt in (1, 2):
            sent = dict(headers)
            if authorization := await c.credentials.authorization():
                sent["Authorization"] = authorization
            response = await session.request(method, c.server + path, headers=sent, **options)
            if response.status != 401 or attempt == 2 or not c.credentials.refresh():
                return response
            response.release()
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
