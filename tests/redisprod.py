"""Production-shaped Redis for the tests: ACL users, TLS with a CA made here, Sentinel, Cluster.

Every server is a real ``redis-server`` (Sentinel: ``redis-server --sentinel``) on free
loopback ports, in a temporary directory of its own, stopped by the fixture that started
it. The CA and certificates are made with the ``openssl`` command (Debian's; installed
with redis by ``scripts/ensure-system-deps.sh``). Waits poll with a deadline.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.servers import RedisServer, _port_open, free_port, wait_started, wait_until

PASSWORD = "s3cret-for-tests"
USER = "scaler"


def _binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run `make test`, which installs it")
    return binary


@dataclass
class Proc(RedisServer):
    """One redis-server or sentinel process (``stop`` as the plain one's), and its directory."""

    folder: Path = Path()


def spawn(folder: Path, config: str, *, sentinel: bool = False, port: int | None = None) -> Proc:
    """A server with ``config`` (redis.conf text; ``port``, ``bind``, ``dir`` added)."""
    port = port or free_port()
    folder = folder / f"{'sentinel' if sentinel else 'redis'}-{port}"
    folder.mkdir(parents=True)
    conf = folder / "redis.conf"  # Sentinel rewrites its file: it must be writable
    conf.write_text(
        f'port {port}\nbind 127.0.0.1\ndir {folder}\nsave ""\nappendonly no\n'
        f"logfile {folder / 'log.txt'}\n{config}"
    )
    args = [_binary(), str(conf), *(["--sentinel"] if sentinel else [])]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proc = Proc(port, process, folder)
    wait_started(proc.stop, "redis", port)
    return proc


# ---- TLS ----------------------------------------------------------------------------------


@dataclass
class Pki:
    """A CA and a server certificate for 127.0.0.1 / localhost, made with openssl."""

    folder: Path
    ca: Path = field(init=False)
    cert: Path = field(init=False)
    key: Path = field(init=False)

    def __post_init__(self) -> None:
        self.ca, self.cert, self.key = (self.folder / n for n in ("ca.crt", "tls.crt", "tls.key"))


def make_pki(folder: Path, name: str = "ca") -> Pki:
    """A fresh CA (its own key) and a server certificate signed by it."""
    folder.mkdir(parents=True, exist_ok=True)
    pki = Pki(folder)
    ca_key = folder / "ca.key"

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=folder)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        f"/CN=test {name}", "-keyout", str(ca_key), "-out", str(pki.ca))  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", str(pki.key), "-out", str(folder / "server.csr"))  # fmt: skip
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", str(folder / "server.csr"), "-CA", str(pki.ca), "-CAkey",
        str(ca_key), "-CAcreateserial", "-days", "2", "-extfile", str(folder / "san.ext"),
        "-out", str(pki.cert))  # fmt: skip
    return pki


def acl_config(password: str = PASSWORD) -> str:
    """Only the ACL user may do anything; the default user is off."""
    return f"user default off\nuser {USER} on >{password} ~* &* +@all\n"


def start_tls_acl(folder: Path, pki: Pki) -> Proc:
    """A server reachable only over TLS (verified by clients), with the ACL user."""
    tls_port = free_port()
    config = (
        f"port 0\ntls-port {tls_port}\ntls-cert-file {pki.cert}\ntls-key-file {pki.key}\n"
        f"tls-ca-cert-file {pki.ca}\ntls-auth-clients no\n{acl_config()}"
    )
    return spawn(folder, config, port=tls_port)


def admin(port: int, **options: object) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, **options)  # type: ignore[arg-type]


# ---- Sentinel -----------------------------------------------------------------------------


@dataclass
class SentinelSet:
    master: Proc
    replica: Proc
    sentinels: list[Proc]
    name: str = "mymaster"

    @property
    def addresses(self) -> str:
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def master_port(self) -> int:
        _, port = admin(self.sentinels[0].port).sentinel_get_master_addr_by_name(self.name)
        return int(port)

    def stop(self) -> None:
        for proc in [*self.sentinels, self.replica, self.master]:
            proc.stop()


def _sentinel_config(name: str, master_port: int) -> str:
    return (
        f"sentinel monitor {name} 127.0.0.1 {master_port} 2\n"
        f"sentinel down-after-milliseconds {name} 2000\n"
        f"sentinel failover-timeout {name} 10000\n"
    )


def start_sentinels(folder: Path, name: str = "mymaster") -> SentinelSet:
    """One master, one replica, three sentinels (quorum 2) that agree on them."""
    master = spawn(folder, "")
    replica = spawn(folder, f"replicaof 127.0.0.1 {master.port}\n")
    wait_until(lambda: admin(master.port).info("replication")["connected_slaves"] == 1, 20,
               "the replica to attach")  # fmt: skip
    sentinels = [
        spawn(folder, _sentinel_config(name, master.port), sentinel=True) for _ in range(3)
    ]
    group = SentinelSet(master, replica, sentinels, name)

    def known() -> bool:
        info = admin(sentinels[0].port).sentinel_master(name)
        return int(info.get("num-other-sentinels", 0)) == 2 and int(info.get("num-slaves", 0)) == 1

    try:
        wait_until(known, 30, "the sentinels to find each other and the replica", step_s=0.2)
    except TimeoutError:
        group.stop()
        raise
    return group


SENTINEL_PASSWORD = "sentinel-s3cret-for-tests"


def _tls_config(pki: Pki) -> str:
    """TLS only (``port 0``), for clients and for replication and sentinel links."""
    return (
        f"port 0\ntls-cert-file {pki.cert}\ntls-key-file {pki.key}\n"
        f"tls-ca-cert-file {pki.ca}\ntls-auth-clients no\ntls-replication yes\n"
    )


def tls_admin(
    port: int, pki: Pki, password: str = PASSWORD, user: str | None = USER
) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(pki.ca),
                       username=user, password=password)  # fmt: skip


def start_tls_sentinels(folder: Path, pki: Pki, name: str = "mymaster") -> SentinelSet:
    """``start_sentinels`` over TLS only: a master and a replica with the ACL user, three
    sentinels that need ``SENTINEL_PASSWORD`` and reach the master as the ACL user."""
    tls = _tls_config(pki)
    master_port = free_port()
    master = spawn(folder, f"{tls}tls-port {master_port}\n{acl_config()}", port=master_port)
    replica_port = free_port()
    replica = spawn(
        folder,
        f"{tls}tls-port {replica_port}\n{acl_config()}replicaof 127.0.0.1 {master.port}\n"
        f"masteruser {USER}\nmasterauth {PASSWORD}\n",
        port=replica_port,
    )
    group = SentinelSet(master, replica, [], name)
    try:
        wait_until(lambda: tls_admin(master.port, pki).info("replication")["connected_slaves"]
                   == 1, 20, "the replica to attach over TLS")  # fmt: skip
        for _ in range(3):
            port = free_port()
            config = (f"{tls}tls-port {port}\nrequirepass {SENTINEL_PASSWORD}\n"
                      f"sentinel sentinel-pass {SENTINEL_PASSWORD}\n"
                      f"{_sentinel_config(name, master.port)}"
                      f"sentinel auth-user {name} {USER}\n"
                      f"sentinel auth-pass {name} {PASSWORD}\n")  # fmt: skip
            group.sentinels.append(spawn(folder, config, sentinel=True, port=port))

        def known() -> bool:
            sentinel = tls_admin(group.sentinels[0].port, pki, SENTINEL_PASSWORD, None)
            info: dict[str, Any] = sentinel.sentinel_master(name)  # type: ignore[assignment]
            return (
                int(info.get("num-other-sentinels", 0)) == 2 and int(info.get("num-slaves", 0)) == 1
            )

        wait_until(known, 30, "the TLS sentinels to find each other and the replica", step_s=0.2)
    except BaseException:
        group.stop()
        raise
    return group


# ---- Cluster ------------------------------------------------------------------------------


@dataclass
class ClusterSet:
    nodes: list[Proc]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}"

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _cluster_port() -> int:
    """A free port whose cluster bus port (+10000) exists and is free too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 < 65536 and not _port_open(port + 10000):
            with contextlib.suppress(OSError), socket.socket() as sock:
                sock.bind(("127.0.0.1", port + 10000))
                return port
    raise RuntimeError("no free port pair for a cluster node")


def start_cluster(folder: Path, masters: int = 3) -> ClusterSet:
    """``masters`` cluster-enabled servers joined by ``redis-cli --cluster create``."""
    nodes = [
        spawn(folder, "cluster-enabled yes\ncluster-node-timeout 5000\n", port=_cluster_port())
        for _ in range(masters)
    ]
    cluster = ClusterSet(nodes)
    try:
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes),
             "--cluster-replicas", "0", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        wait_until(
            lambda: all(admin(n.port).cluster("info")["cluster_state"] == "ok" for n in nodes),
            30, "the cluster to be ok", step_s=0.1,
        )  # fmt: skip
    except BaseException:
        cluster.stop()
        raise
    return cluster


def command_calls(port: int, commands: Sequence[str]) -> int:
    """How many times this server ran these commands (``INFO commandstats``)."""
    stats = admin(port).info("commandstats")
    return sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in commands)


@contextlib.contextmanager
def stopping(*things: Proc | SentinelSet | ClusterSet) -> Iterator[None]:
    try:
        yield
    finally:
        for thing in things:
            thing.stop()


def deadline(seconds: float) -> float:
    return time.monotonic() + seconds
