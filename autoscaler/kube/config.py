"""Where the API server is and who we are to it: a kubeconfig, or the pod's service account.

Read by kubectl's rules (client-go's ``clientcmd``), without the ``kubernetes`` package's
loader: importing it brings pydantic, requests, oauthlib and ~700 modules, ~19 MB of RSS
at every start for a few hundred lines of reading (docs/performance.md, goal 5).

Kubeconfig
    ``--kubeconfig FILE`` is that file alone. ``$KUBECONFIG`` may list several files
    (``:``-separated); they are merged as kubectl merges them: the first file to name a
    cluster, user or context wins, ``current-context`` comes from the first file that sets
    it, missing files are skipped. A relative path in a file is relative to that file.
    ``--context`` picks a context; else ``current-context``.

    A cluster: ``server``; ``certificate-authority(-data)`` (else the system store);
    ``insecure-skip-tls-verify`` (honoured, with a warning: it is the user's explicit
    choice, as in kubectl); ``tls-server-name``; ``proxy-url`` (http/https proxies).
    A user: ``client-certificate(-data)`` with ``client-key(-data)``; ``token`` or
    ``tokenFile`` (re-read every minute, as client-go does); ``username``/``password``;
    ``exec`` (a credential plugin, ``client.authentication.k8s.io/v1`` or ``v1beta1``:
    its token or client certificate is cached until its ``expirationTimestamp`` and fetched
    again then, or when the server answers 401). ``auth-provider`` is refused with the way
    out: kubectl itself dropped the gcp and azure providers for exec plugins.

In a cluster (no kubeconfig, ``KUBERNETES_SERVICE_HOST`` set)
    ``https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT``, the service account's
    ``ca.crt``, and its projected token, re-read every minute (the kubelet rotates it).

Every failure is a ``KubeError`` naming the file, the entry and what is wrong; no secret
(token, password, key, plugin output) is ever part of a message or a log line.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import datetime as dt
import json
import logging
import os
import shutil
import ssl
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autoscaler.errors import KubeError, truncate
from autoscaler.logs import log_event

logger = logging.getLogger(__name__)

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REREAD_S = 60.0  # client-go's cachingTokenSource period for token files
EXEC_TIMEOUT_S = 60.0
EXEC_API_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
EXPIRY_MARGIN_S = 10.0  # fetch a plugin's credential again this long before it expires


def kubeconfig_paths(
    kubeconfig: str | os.PathLike[str] | None, environ: Mapping[str, str] = os.environ
) -> list[Path] | None:
    """The kubeconfig files to merge: ``kubeconfig``, else ``$KUBECONFIG``'s, else None in a
    cluster, else ``~/.kube/config``; ``KubeError`` when there is none of them."""
    if kubeconfig:
        path = Path(kubeconfig)
        if not path.is_file():
            raise KubeError(f"kubeconfig {path}: no such file")
        return [path]
    if listed := [Path(p) for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p]:
        if existing := [p for p in listed if p.is_file()]:
            return existing
        raise KubeError(f"KUBECONFIG {environ['KUBECONFIG']}: no such file")
    if environ.get("KUBERNETES_SERVICE_HOST"):
        return None
    home = Path.home() / ".kube" / "config"
    if home.is_file():
        return [home]
    raise KubeError("no kubeconfig (--kubeconfig, KUBECONFIG) and not in a cluster")


def _yaml_problem(error: yaml.YAMLError) -> str:
    """One line: the parser's problem and where (its own text spans several lines)."""
    if isinstance(error, yaml.MarkedYAMLError) and error.problem_mark is not None:
        mark = error.problem_mark
        return f"{error.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return truncate(" ".join(str(error).split()), 200)


@dataclass
class _Entry:
    """A named kubeconfig entry and the directory its relative paths start from."""

    body: dict[str, Any]
    base: Path


@dataclass
class Kubeconfig:
    """The merged files: entries by name, and the current context's name."""

    clusters: dict[str, _Entry] = field(default_factory=dict)
    users: dict[str, _Entry] = field(default_factory=dict)
    contexts: dict[str, _Entry] = field(default_factory=dict)
    current: str | None = None
    where: str = ""  # the files, for messages

    @classmethod
    def load(cls, paths: list[Path]) -> Kubeconfig:
        merged = cls(where=os.pathsep.join(map(str, paths)))
        for path in paths:
            try:
                doc = yaml.safe_load(path.read_text()) or {}
            except (OSError, UnicodeDecodeError) as e:
                raise KubeError(f"kubeconfig {path}: {truncate(str(e), 200)}") from None
            except yaml.YAMLError as e:
                raise KubeError(f"kubeconfig {path}: not YAML: {_yaml_problem(e)}") from None
            if not isinstance(doc, dict):
                raise KubeError(f"kubeconfig {path}: not a mapping")
            for section, key in (
                ("clusters", "cluster"),
                ("users", "user"),
                ("contexts", "context"),
            ):
                for item in doc.get(section) or []:
                    name, body = (item or {}).get("name"), (item or {}).get(key)
                    if not isinstance(name, str) or not isinstance(body, dict):
                        raise KubeError(f"kubeconfig {path}: {section}: an entry without "
                                        f"a name and a {key} mapping")  # fmt: skip
                    getattr(merged, section).setdefault(name, _Entry(body, path.parent))
            if merged.current is None and doc.get("current-context"):
                merged.current = str(doc["current-context"])
        return merged

    def context(self, name: str | None) -> tuple[str, dict[str, Any]]:
        """The chosen context (``name``, else the current one): its name and body."""
        chosen = name or self.current
        if not chosen:
            raise KubeError(f"kubeconfig {self.where}: no current-context and no --context")
        if chosen not in self.contexts:
            raise KubeError(f"kubeconfig {self.where}: no context {chosen!r}")
        return chosen, self.contexts[chosen].body

    def entry(self, kind: str, name: Any, context: str) -> _Entry:
        table: dict[str, _Entry] = getattr(self, f"{kind}s")
        if not isinstance(name, str) or name not in table:
            raise KubeError(f"kubeconfig {self.where}: context {context!r} names {kind} "
                            f"{name!r}, which is not defined")  # fmt: skip
        return table[name]


def _data(entry: _Entry, key: str, what: str) -> bytes | None:
    """``key-data`` (base64) or the file ``key`` (relative to the entry's file)."""
    if (encoded := entry.body.get(f"{key}-data")) is not None:
        try:
            return base64.b64decode(str(encoded), validate=True)
        except (binascii.Error, ValueError):
            raise KubeError(f"{what}: {key}-data is not base64") from None
    if (name := entry.body.get(key)) is not None:
        path = entry.base / str(name)
        try:
            return path.read_bytes()
        except OSError as e:
            raise KubeError(f"{what}: {key} {path}: {e.strerror or e}") from None
    return None


def load_cert_chain(context: ssl.SSLContext, cert: bytes, key: bytes, what: str) -> None:
    """Load a client certificate and key given as bytes (``ssl`` takes only files): through
    a private temporary directory, removed at once."""
    directory = tempfile.mkdtemp(prefix="queue-autoscaler-")
    try:
        cert_path, key_path = Path(directory, "tls.crt"), Path(directory, "tls.key")
        for path, data in ((cert_path, cert), (key_path, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        context.load_cert_chain(cert_path, key_path)
    except (ssl.SSLError, ValueError) as e:
        raise KubeError(f"{what}: the client certificate or key is not usable: {e}") from None
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class Credentials:
    """Who we are: the Authorization header for the next request (None: none, e.g. a client
    certificate alone). ``refresh`` after a 401: True when asking again may help."""

    async def authorization(self) -> str | None:
        return None

    def refresh(self) -> bool:
        return False


@dataclass
class StaticToken(Credentials):
    header: str  # "Bearer …" or "Basic …"

    async def authorization(self) -> str | None:
        return self.header


@dataclass
class TokenFile(Credentials):
    """A bearer token read from ``path``, again every ``TOKEN_REREAD_S`` or after a 401."""

    path: Path
    _token: str = ""
    _read_at: float = -TOKEN_REREAD_S

    async def authorization(self) -> str | None:
        if time.monotonic() - self._read_at >= TOKEN_REREAD_S or not self._token:
            try:
                self._token = self.path.read_text().strip()
            except OSError as e:
                if not self._token:  # else keep the last one: a rotation in progress
                    raise KubeError(f"token file {self.path}: {e.strerror or e}") from None
            self._read_at = time.monotonic()
        return f"Bearer {self._token}"

    def refresh(self) -> bool:
        self._read_at = -TOKEN_REREAD_S
        return True


@dataclass
class ExecPlugin(Credentials):
    """A client-go credential plugin: run ``command`` for an ``ExecCredential``; keep its
    token (or client certificate, loaded into ``ssl_context``) until it expires."""

    config: dict[str, Any]
    base: Path
    user: str  # "kubeconfig FILE: user 'NAME'", for messages
    ssl_context: ssl.SSLContext | None
    cluster: dict[str, Any]
    _token: str | None = None
    _expires_at: float | None = None  # time.time(); None: until a 401
    _fetched: bool = False
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        env = self.config.get("env") or []
        if not isinstance(env, list) or not all(isinstance(e, dict) for e in env):
            raise KubeError(f"{self.user}: exec env is not a list of name/value mappings")
        version = self.config.get("apiVersion")
        if version not in EXEC_API_VERSIONS:
            raise KubeError(f"{self.user}: exec apiVersion {version!r} is not one of "
                            f"{', '.join(EXEC_API_VERSIONS)}")  # fmt: skip
        if not isinstance(self.config.get("command"), str) or not self.config["command"]:
            raise KubeError(f"{self.user}: exec has no command")
        if self.config.get("interactiveMode") == "Always":
            raise KubeError(f"{self.user}: exec plugin {self.config['command']!r} needs "
                            "an interactive terminal (interactiveMode: Always); the controller "
                            "has none")  # fmt: skip

    @property
    def _fresh(self) -> bool:
        return self._fetched and (
            self._expires_at is None or time.time() < self._expires_at - EXPIRY_MARGIN_S
        )

    async def authorization(self) -> str | None:
        if not self._fresh:
            async with self._lock:
                if not self._fresh:
                    await self._fetch()
        return f"Bearer {self._token}" if self._token else None

    def refresh(self) -> bool:
        self._fetched = False
        return True

    def _command(self) -> str:
        command = str(self.config["command"])
        if os.sep in command and not os.path.isabs(command):  # relative to the kubeconfig
            return str(self.base / command)
        return command

    async def _fetch(self) -> None:
        version = self.config["apiVersion"]
        what = f"{self.user}: exec plugin {self.config['command']!r}"
        spec: dict[str, Any] = {"interactive": False}
        if self.config.get("provideClusterInfo"):
            spec["cluster"] = self.cluster
        env = dict(os.environ)
        for item in self.config.get("env") or []:
            env[str(item.get("name"))] = str(item.get("value", ""))
        env["KUBERNETES_EXEC_INFO"] = json.dumps(
            {"apiVersion": version, "kind": "ExecCredential", "spec": spec}
        )
        args = [str(a) for a in self.config.get("args") or []]
        try:
            process = await asyncio.create_subprocess_exec(
                self._command(), *args, env=env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
        except OSError as e:
            hint = self.config.get("installHint")
            raise KubeError(f"{what}: {e.strerror or e}" + (f" ({hint})" if hint else "")) from None
        try:
            async with asyncio.timeout(EXEC_TIMEOUT_S):
                out, err = await process.communicate()
        except TimeoutError:
            process.kill()
            await process.wait()
            raise KubeError(f"{what}: no answer within {EXEC_TIMEOUT_S:g} s") from None
        if process.returncode:
            last = (err.decode(errors="replace").strip().splitlines() or [""])[-1]
            raise KubeError(f"{what}: exit code {process.returncode}: {truncate(last, 200)}")
        self._accept(out, version, what)
        self._fetched = True
        log_event(logger, "kube exec credential", user=self.user, expires=self._expires_at)

    def _accept(self, out: bytes, version: str, what: str) -> None:
        try:
            doc = json.loads(out)
        except ValueError:
            raise KubeError(f"{what}: its output is not JSON") from None
        if not isinstance(doc, dict):
            raise KubeError(f"{what}: its output is not an ExecCredential of {version}")
        status = doc.get("status")
        if doc.get("kind") != "ExecCredential" or doc.get("apiVersion") != version:
            raise KubeError(f"{what}: its output is not an ExecCredential of {version}")
        if not isinstance(status, dict):
            raise KubeError(f"{what}: its ExecCredential has no status")
        token, cert, key = (
            status.get(k) for k in ("token", "clientCertificateData", "clientKeyData")
        )
        if not token and not (cert and key):
            raise KubeError(f"{what}: its ExecCredential has neither a token nor a client "
                            "certificate and key")  # fmt: skip
        if cert and key:
            if self.ssl_context is None:
                raise KubeError(f"{what}: a client certificate for a server without TLS")
            load_cert_chain(self.ssl_context, str(cert).encode(), str(key).encode(), what)
        self._token = str(token) if token else None
        self._expires_at = None
        if stamp := status.get("expirationTimestamp"):
            try:
                self._expires_at = dt.datetime.fromisoformat(str(stamp)).timestamp()
            except ValueError:
                raise KubeError(f"{what}: expirationTimestamp {stamp!r} is not RFC 3339") from None


@dataclass(frozen=True)
class Connection:
    """How to reach the API server: base URL, TLS, credentials, proxy."""

    server: str
    ssl_context: ssl.SSLContext | None  # None: plain HTTP
    credentials: Credentials
    tls_server_name: str | None = None
    proxy: str | None = None


def _ssl_context(cluster: _Entry, what: str) -> ssl.SSLContext:
    ca = _data(cluster, "certificate-authority", what)
    try:
        context = ssl.create_default_context(cadata=ca.decode() if ca else None)
    except (ssl.SSLError, ValueError, UnicodeDecodeError) as e:
        raise KubeError(f"{what}: certificate-authority is not usable: {e}") from None
    if cluster.body.get("insecure-skip-tls-verify") is True:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        log_event(logger, "kube tls not verified", logging.WARNING,
                  reason=f"{what}: insecure-skip-tls-verify is true")  # fmt: skip
    return context


def from_kubeconfig(paths: list[Path], context_name: str | None = None) -> Connection:
    """The connection a kubeconfig's (merged) context describes."""
    config = Kubeconfig.load(paths)
    name, context = config.context(context_name)
    cluster = config.entry("cluster", context.get("cluster"), name)
    user = config.entry("user", context.get("user"), name) if context.get("user") else None
    server = str(cluster.body.get("server") or "").rstrip("/")
    what = f"kubeconfig {config.where}: cluster {context.get('cluster')!r}"
    if not server.startswith(("https://", "http://")):
        raise KubeError(f"{what}: server {server!r} is not an http(s) URL")
    tls = _ssl_context(cluster, what) if server.startswith("https://") else None
    proxy = cluster.body.get("proxy-url")
    if proxy is not None and not str(proxy).startswith(("http://", "https://")):
        raise KubeError(f"{what}: proxy-url {proxy!r}: only http(s) proxies are supported")
    credentials = _credentials(user, str(context.get("user")), tls, cluster.body, config.where)
    return Connection(
        server,
        tls,
        credentials,
        tls_server_name=cluster.body.get("tls-server-name") or None,
        proxy=str(proxy) if proxy else None,
    )


def _credentials(
    user: _Entry | None,
    name: str,
    tls: ssl.SSLContext | None,
    cluster: dict[str, Any],
    where: str,
) -> Credentials:
    if user is None:
        return Credentials()
    what = f"kubeconfig {where}: user {name!r}"
    body = user.body
    if "auth-provider" in body:
        provider = (body["auth-provider"] or {}).get("name", "?")
        raise KubeError(f"{what}: auth-provider {provider!r} is not supported; use an exec "
                        "credential plugin (kubectl dropped the gcp and azure providers for "
                        "gke-gcloud-auth-plugin and kubelogin)")  # fmt: skip
    cert = _data(user, "client-certificate", what)
    key = _data(user, "client-key", what)
    if bool(cert) != bool(key):
        raise KubeError(f"{what}: a client certificate needs both the certificate and the key")
    if cert and key:
        if tls is None:
            raise KubeError(f"{what}: a client certificate for a server without TLS")
        load_cert_chain(tls, cert, key, what)
    if "exec" in body:
        if not isinstance(body["exec"], dict):
            raise KubeError(f"{what}: exec is not a mapping")
        return ExecPlugin(body["exec"], user.base, what, tls, _cluster_info(cluster))
    if token := body.get("token"):
        return StaticToken(f"Bearer {token}")
    if token_file := body.get("tokenFile"):
        return TokenFile(user.base / str(token_file))
    if (username := body.get("username")) is not None:
        pair = f"{username}:{body.get('password') or ''}".encode()
        return StaticToken(f"Basic {base64.b64encode(pair).decode()}")
    return Credentials()


def _cluster_info(cluster: dict[str, Any]) -> dict[str, Any]:
    """The ExecCredential ``spec.cluster`` for ``provideClusterInfo`` (the same wire names
    as the kubeconfig's cluster)."""
    keys = ("server", "tls-server-name", "insecure-skip-tls-verify",
            "certificate-authority-data", "proxy-url")  # fmt: skip
    return {key: cluster[key] for key in keys if key in cluster}


def in_cluster(environ: Mapping[str, str] = os.environ, root: Path = SERVICE_ACCOUNT) -> Connection:
    """The pod's service account (``root``: where Kubernetes mounts it)."""
    host, port = (
        environ.get("KUBERNETES_SERVICE_HOST", ""),
        environ.get("KUBERNETES_SERVICE_PORT", ""),
    )
    if not host or not port:
        raise KubeError("in a cluster without KUBERNETES_SERVICE_HOST and _PORT")
    if ":" in host:  # IPv6
        host = f"[{host}]"
    ca = root / "ca.crt"
    try:
        context = ssl.create_default_context(cafile=str(ca))
    except (OSError, ssl.SSLError) as e:
        raise KubeError(f"service account CA {ca}: {e}") from None
    return Connection(f"https://{host}:{port}", context, TokenFile(root / "token"))


def connection(
    kubeconfig: str | os.PathLike[str] | None,
    context: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Connection:
    """From ``kubeconfig``, else ``$KUBECONFIG``, else in-cluster, else ``~/.kube/config``."""
    paths = kubeconfig_paths(kubeconfig, environ)
    return from_kubeconfig(paths, context) if paths is not None else in_cluster(environ)
