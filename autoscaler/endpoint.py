"""Where a Redis trigger's server is and how to reach it, as one string.

A trigger's ``redis_url`` is the one key by which the controller groups triggers into one
connection pool per server (``sources.SourcePool``), and by which the drain protocol and
the reaper find that pool again. Sentinel, Cluster and a credentials Secret are part of
"which server, how": two workloads naming the same node but different Secrets must not
share a pool. So the annotations (``redis-url``, ``redis-sentinels``,
``redis-sentinel-master``, ``redis-cluster``, ``redis-auth-secret``) are folded into one
URL-shaped string, and ``autoscaler.redisconn`` unfolds it:

- standalone: the ``redis://``/``rediss://``/``unix://`` URL itself, unchanged;
- Cluster: the node's URL with the query parameter ``cluster=true``;
- Sentinel: ``redis+sentinel://HOST:PORT,HOST:PORT/MASTER``
  (``rediss+sentinel://`` for TLS to the master and the sentinels);
- a Secret: the query parameter ``auth-secret=NAMESPACE/NAME``.

Only names travel here, never a credential: the string is logged (``remote.redact_url``)
and used as a metric-free map key. Stdlib only: the annotations, the sources and the
sidecar all read it.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # scheme → TLS
_CLUSTER, _SECRET = "cluster", "auth-secret"


@dataclass(frozen=True)
class RedisEndpoint:
    """The unfolded form. ``url`` is None for Sentinel (the sentinels name the master)
    and when the controller's ``--redis-url`` is meant; ``secret`` is ``NAMESPACE/NAME``
    (or a bare ``NAME`` before the workload's namespace is known)."""

    url: str | None = None
    sentinels: tuple[tuple[str, int], ...] = ()
    sentinel_master: str | None = None
    sentinel_tls: bool = False
    cluster: bool = False
    secret: str | None = None

    @property
    def default(self) -> bool:
        """Nothing but (maybe) a secret: the controller's ``--redis-url`` is the server."""
        return self.url is None and not self.sentinels

    def fold(self) -> str | None:
        """The string form; None when nothing at all is set (the controller's default)."""
        query: list[tuple[str, str]] = []
        if self.cluster:
            query.append((_CLUSTER, "true"))
        if self.secret:
            query.append((_SECRET, self.secret))
        if self.sentinels:
            scheme = "rediss+sentinel" if self.sentinel_tls else "redis+sentinel"
            hosts = ",".join(f"{_host(h)}:{p}" for h, p in self.sentinels)
            base = f"{scheme}://{hosts}/{urllib.parse.quote(self.sentinel_master or '', safe='')}"
        elif self.url is not None:
            base = self.url
        elif query:
            base = ""  # the controller's --redis-url, with these options
        else:
            return None
        if not query:
            return base
        joiner = "&" if "?" in base else "?"
        return base + joiner + urllib.parse.urlencode(query, safe="/")

    @classmethod
    def unfold(cls, text: str | None) -> RedisEndpoint:
        """The inverse of ``fold``; a plain URL is a standalone server. ValueError for a
        malformed sentinel address."""
        if not text:
            return cls()
        base, _, query = text.partition("?")
        options = dict(urllib.parse.parse_qsl(query, keep_blank_values=True))
        cluster = options.pop(_CLUSTER, "") == "true"
        secret = options.pop(_SECRET, None) or None
        rest = urllib.parse.urlencode(list(options.items()), safe="/")
        scheme, sep, after = base.partition("://")
        if sep and scheme in SENTINEL_SCHEMES:
            hosts, _, master = after.partition("/")
            return cls(
                sentinels=parse_sentinels(hosts),
                sentinel_master=urllib.parse.unquote(master) or None,
                sentinel_tls=SENTINEL_SCHEMES[scheme],
                cluster=cluster,
                secret=secret,
            )
        url = (base + ("?" + rest if rest else "")) or None
        return cls(url=url, cluster=cluster, secret=secret)

    def with_url(self, url: str | None) -> RedisEndpoint:
        """This endpoint with the controller's default URL filled in where none is set."""
        if not self.default or url is None:
            return self
        inner = RedisEndpoint.unfold(url)  # the flag itself may carry options
        return RedisEndpoint(
            url=inner.url,
            sentinels=inner.sentinels,
            sentinel_master=inner.sentinel_master,
            sentinel_tls=inner.sentinel_tls,
            cluster=self.cluster or inner.cluster,
            secret=self.secret or inner.secret,
        )


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def parse_sentinels(text: str) -> tuple[tuple[str, int], ...]:
    """``host:port,host:port`` → ((host, port), …); ValueError when malformed or empty."""
    out: list[tuple[str, int]] = []
    for part in text.split(","):
        part = part.strip()
        host, sep, port = part.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(part)
        if any(c.isspace() or c in "/?#@," for c in host):
            raise ValueError(part)
        out.append((host, int(port)))
    if not out or len(set(out)) != len(out):
        raise ValueError(text)
    return tuple(out)
