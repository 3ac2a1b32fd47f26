"""What every client of a remote server shares: one backoff, URL redaction, env secrets.

Redis (``autoscaler.redisconn``, the sources, the sidecar), Prometheus and the Kubernetes
API all retry, log server URLs and read credentials; each of those is written once, here,
on the ground floor (the standard library and ``errors`` only), so that none of them imports another
client's module to reuse it.

Terms: *backoff* is the wait before the next attempt after ``attempt`` failures in a row:
exponential from ``base_s``, capped at ``cap_s``, with "equal jitter" (half fixed, half
random) so that many processes don't retry in lockstep. *Redacted* means a password,
and any query value that names a secret, is shown as ``***``.
"""

from __future__ import annotations

import os
import random
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from autoscaler.errors import SourceError


def backoff_delay(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Seconds to wait after ``attempt`` (≥ 1) failures in a row: ``min(cap_s,
    base_s · 2^(attempt-1))``, its upper half random."""
    ceiling = min(cap_s, base_s * 2.0 ** min(attempt - 1, 30))
    return ceiling / 2 + rng.uniform(0, ceiling / 2)


@dataclass
class Backoff:
    """Exponential, capped, jittered delay between attempts at a failing server.

    Delay after the n-th failure in a row: ``backoff_delay(n, base_s, cap_s)``, so that
    many controllers don't retry in lockstep. Defaults 0.5 s and 10 s: an outage is
    retried at least every 10 s, so a recovery shows within one or two polling intervals,
    and no restart is ever needed (KEDA #2415).
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
        delay = backoff_delay(self.failures, self.base_s, self.cap_s, self.rng)
        self.retry_at = self.clock() + delay
        return delay

    def succeeded(self) -> int:
        """Record a success; returns how many failures in a row it ends (0: none)."""
        ended, self.failures, self.retry_at = self.failures, 0, 0.0
        return ended


_SECRET_QUERY_KEYS = frozenset({"password", "pass", "token", "access_token"})


def environment_proxy(url: str) -> str | None:
    """The proxy for ``url`` from ``HTTPS_PROXY``/``HTTP_PROXY`` unless ``NO_PROXY`` exempts
    its host, as client-go and Prometheus clients read them; read once per client, not per
    request (aiohttp's ``trust_env`` would also look up ``~/.netrc`` on a thread at every
    request, and a netrc entry beside our own Authorization header fails the request)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
    except ValueError:  # not a URL: its request fails where it is sent, and says so
        return None
    proxy = urllib.request.getproxies().get(parts.scheme)
    return proxy if proxy and not urllib.request.proxy_bypass(host) else None


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
