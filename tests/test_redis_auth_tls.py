"""ACL users and TLS: the controller (credentials from a workload's Secret) and the sidecar
(credentials from its environment) against a real redis-server that accepts only TLS
(verified against a CA made in the test) and only the ACL user.

The controller's Secret lookup is the seam ``app.cluster`` fills with ``kube.secrets``;
here it answers from a dict (the Kubernetes side runs on the real control plane in
``tests/cluster/test_redis_secret.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from autoscaler.annotations import ANNOTATION_PREFIX
from autoscaler.controller import Controller
from autoscaler.errors import SourceError
from autoscaler.metrics import ControllerMetrics
from autoscaler.redisconn import RedisCredentials, make_client
from autoscaler.sources import SourcePool
from autoscaler.workload import WorkloadEvent, WorkloadRef
from tests.e2e import eventually
from tests.memtarget import MemoryTarget
from tests.processor import Processor
from tests.redisprod import PASSWORD, USER, Pki, Proc, make_pki, start_tls_acl
from tests.servers import free_port

NS = "shop"
FAILED = "TriggerFailed"  # the Warning Event of a trigger that cannot be read


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A second CA: it did not sign the server's certificate."""
    return make_pki(tmp_path_factory.mktemp("other-pki"), "other")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Proc]:
    proc = start_tls_acl(tmp_path_factory.mktemp("tls-redis"), pki)
    yield proc
    proc.stop()


def _url(server: Proc) -> str:
    return f"rediss://127.0.0.1:{server.port}/0"


class Secrets:
    """The Secret store the lookup reads; counts the reads (rotation re-reads)."""

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], dict[str, bytes]] = {}
        self.reads = 0

    async def __call__(self, namespace: str, name: str) -> Mapping[str, bytes]:
        self.reads += 1
        if (namespace, name) not in self.data:
            raise SourceError(f"redis-auth-secret {namespace}/{name}: not found")
        return dict(self.data[(namespace, name)])


def _secret(pki: Pki, password: str = PASSWORD, ca: Path | None = None) -> dict[str, bytes]:
    return {"username": USER.encode(), "password": password.encode(),
            "ca.crt": (ca or pki.ca).read_bytes()}  # fmt: skip


class Fleet:
    """The controller over in-memory targets, workloads in namespace ``NS``."""

    def __init__(self, secrets: Secrets, redis_url: str | None = None) -> None:
        self.targets: dict[WorkloadRef, MemoryTarget] = {}
        self.pool = SourcePool(redis_url=redis_url, secrets=secrets)
        self.controller = Controller(
            sources=self.pool,
            target_factory=lambda ref: self.targets.setdefault(ref, MemoryTarget(ref)),
            metrics=ControllerMetrics(CollectorRegistry()),
        )

    def add(self, name: str, queue: str, **keys: str) -> WorkloadRef:
        ref = WorkloadRef(NS, name)
        spec = {"redis-list": queue, "messages-per-replica": "10", "polling-interval": "100ms",
                "scale-up-max-pods": "100", "drain": "false", **keys}  # fmt: skip
        self.controller.apply(
            WorkloadEvent(ref, {ANNOTATION_PREFIX + k: v for k, v in spec.items()}, 1)
        )
        self.targets[ref].replica_count = 1
        return ref

    async def until(self, what: str, check: Callable[[], object], timeout_s: float = 20.0) -> None:
        await eventually(lambda: bool(check()), timeout_s, what)


@contextlib.asynccontextmanager
async def running(fleet: Fleet) -> AsyncIterator[Fleet]:
    task = asyncio.create_task(fleet.controller.run())
    try:
        yield fleet
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await fleet.pool.aclose()


async def _push(server: Proc, pki: Pki, queue: str, bodies: list[bytes]) -> None:
    creds = RedisCredentials.from_env(
        {"REDIS_USERNAME": USER, "REDIS_PASSWORD": PASSWORD, "REDIS_CA_FILE": str(pki.ca)}
    )
    client = make_client(_url(server), creds)
    try:
        await client.flushall()
        if bodies:
            await client.lpush(queue, *bodies)
    finally:
        await client.aclose()


async def test_controller_reads_through_tls_with_the_secrets_acl_user(
    server: Proc, pki: Pki, other_pki: Pki
) -> None:
    """Three workloads on one server: the good Secret scales; a wrong password and a
    wrong CA fail only their own workloads, with an Event naming their Secret."""
    await _push(server, pki, "jobs", [b"m%d" % i for i in range(95)])
    secrets = Secrets()
    secrets.data[(NS, "good")] = _secret(pki)
    secrets.data[(NS, "wrongpass")] = _secret(pki, password="not-it")
    secrets.data[(NS, "wrongca")] = _secret(pki, ca=other_pki.ca)
    fleet = Fleet(secrets)
    url = _url(server)
    good = fleet.add("good", "jobs", **{"redis-url": url, "redis-auth-secret": "good"})
    bad_pass = fleet.add("bad-pass", "jobs", **{"redis-url": url, "redis-auth-secret": "wrongpass"})
    bad_ca = fleet.add("bad-ca", "jobs", **{"redis-url": url, "redis-auth-secret": "wrongca"})
    async with running(fleet):
        await fleet.until("good scaled", lambda: fleet.targets[good].replica_count == 10)
        await fleet.until("both events", lambda: fleet.targets[bad_pass].events
                          and fleet.targets[bad_ca].events)  # fmt: skip
    assert fleet.targets[good].scales == [10]  # ceil(95 / 10)
    assert all(reason != FAILED for reason, _, _ in fleet.targets[good].events)
    (reason, message, warning), *_ = fleet.targets[bad_pass].events
    assert (reason, warning) == (FAILED, True)
    assert f"Secret {NS}/wrongpass" in message and "username-password" in message
    assert "not-it" not in message
    (reason, message, warning), *_ = fleet.targets[bad_ca].events
    assert f"Secret {NS}/wrongca" in message and "certificate" in message.lower()
    assert fleet.targets[bad_pass].scales == fleet.targets[bad_ca].scales == []  # held


async def test_a_missing_secret_fails_only_its_workload_and_is_read_again(
    server: Proc, pki: Pki
) -> None:
    """Created after the fact (or rotated), the Secret is picked up without a restart."""
    await _push(server, pki, "jobs", [b"m%d" % i for i in range(35)])
    secrets = Secrets()
    fleet = Fleet(secrets)
    ref = fleet.add("late", "jobs", **{"redis-url": _url(server), "redis-auth-secret": "late"})
    async with running(fleet):
        await fleet.until("event", lambda: fleet.targets[ref].events)
        assert "late: not found" in fleet.targets[ref].events[0][1]
        secrets.data[(NS, "late")] = _secret(pki)
        await fleet.until("scaled", lambda: fleet.targets[ref].replica_count == 4, 60)


async def test_rotation_a_new_password_is_read_after_the_auth_error(server: Proc, pki: Pki) -> None:
    """The server's password changes; the old one is refused; the Secret, updated, is
    read again (after the refusal, not only at the TTL) and reads recover."""
    await _push(server, pki, "rot", [b"m%d" % i for i in range(25)])
    secrets = Secrets()
    secrets.data[(NS, "rot")] = _secret(pki)
    fleet = Fleet(secrets)
    ref = fleet.add("rot", "rot", **{"redis-url": _url(server), "redis-auth-secret": "rot"})
    admin_creds = RedisCredentials.from_env(
        {"REDIS_USERNAME": USER, "REDIS_PASSWORD": PASSWORD, "REDIS_CA_FILE": str(pki.ca)}
    )
    admin = make_client(_url(server), admin_creds)
    try:
        async with running(fleet):
            await fleet.until("scaled", lambda: fleet.targets[ref].replica_count == 3)
            await admin.execute_command("ACL", "SETUSER", USER, "resetpass", ">rotated-pw")
            await admin.execute_command("CLIENT", "KILL", "USER", USER)  # old sessions end
            await admin.lpush("rot", *[b"n%d" % i for i in range(30)])
            reads = secrets.reads
            secrets.data[(NS, "rot")] = _secret(pki, password="rotated-pw")
            await fleet.until("rescaled", lambda: fleet.targets[ref].replica_count == 6, 60)
            assert secrets.reads > reads
    finally:
        with contextlib.suppress(Exception):
            await admin.execute_command("ACL", "SETUSER", USER, "resetpass", f">{PASSWORD}")
        await admin.aclose()


async def test_a_secret_applies_to_the_controllers_default_server(server: Proc, pki: Pki) -> None:
    """``redis-auth-secret`` without ``redis-url``: the credentials for ``--redis-url``."""
    await _push(server, pki, "dflt", [b"m%d" % i for i in range(15)])
    secrets = Secrets()
    secrets.data[(NS, "dflt")] = _secret(pki)
    fleet = Fleet(secrets, redis_url=_url(server))
    ref = fleet.add("dflt", "dflt", **{"redis-auth-secret": "dflt"})
    async with running(fleet):
        await fleet.until("scaled", lambda: fleet.targets[ref].replica_count == 2)


def _sidecar(server: Proc, queue: str, forward: str, env: Mapping[str, str], log: Path,
             *flags: str) -> subprocess.Popen[bytes]:  # fmt: skip
    args = [sys.executable, "-m", "autoscaler", "consume", "--queue", queue, "--forward",
            forward, "--redis-url", _url(server), "--id", f"pod-{free_port()}",
            "--heartbeat-interval", "0.2", "--log-format", "json", *flags]  # fmt: skip
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
    with log.open("wb") as out:
        return subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env={**clean, **env})


async def test_sidecar_consumes_over_tls_with_credentials_from_files(
    server: Proc, pki: Pki, tmp_path: Path
) -> None:
    bodies = [b"id-%04d" % i for i in range(200)]
    await _push(server, pki, "work", bodies)
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")  # a mounted Secret's trailing newline
    env = {"REDIS_USERNAME": USER, "REDIS_PASSWORD_FILE": str(password_file),
           "REDIS_CA_FILE": str(pki.ca)}  # fmt: skip
    async with Processor() as processor:
        proc = _sidecar(server, "work", processor.url, env, tmp_path / "sidecar.log")
        try:
            await eventually(lambda: len(set(processor.accepted)) == len(bodies), 30, "all")
        finally:
            proc.terminate()
            proc.wait(15)
    assert set(processor.accepted) == set(bodies)
    assert PASSWORD not in (tmp_path / "sidecar.log").read_text()


@pytest.mark.parametrize("wrong", ["password", "ca"])
async def test_sidecar_with_wrong_credentials_exits_naming_the_file(
    server: Proc, pki: Pki, other_pki: Pki, tmp_path: Path, wrong: str
) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("not-it" if wrong == "password" else PASSWORD)
    ca = other_pki.ca if wrong == "ca" else pki.ca
    env = {"REDIS_USERNAME": USER, "REDIS_PASSWORD_FILE": str(password_file),
           "REDIS_CA_FILE": str(ca)}  # fmt: skip
    log = tmp_path / "sidecar.log"
    proc = _sidecar(server, "work", "http://127.0.0.1:9/process", env, log)
    assert proc.wait(60) == 1
    text = log.read_text()
    named = str(password_file) if wrong == "password" else str(ca)
    line = next(line for line in text.splitlines() if "cannot use redis" in line)
    assert named in line, text
    assert ("username-password" in line) if wrong == "password" else ("certificate" in line)
    assert "Traceback" not in text and "not-it" not in text
