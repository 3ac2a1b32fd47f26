"""TLS to a Sentinel-managed master, and sentinels that need a password.

Real servers over TLS only (a CA made in the test): a master and a replica with an ACL
user, three ``redis-server --sentinel`` with ``requirepass``. The controller's client is
built from the annotations (``redis-sentinel-tls``) and a Secret's data (``ca.crt``,
``username``, ``password``, ``sentinel-password``); the sidecar from ``--sentinel-tls`` and
its environment. A wrong sentinel password or CA fails with the origin named.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoscaler.annotations import ANNOTATION_PREFIX, parse_spec
from autoscaler.errors import InvalidSpecError
from autoscaler.policy.spec import RedisTrigger
from autoscaler.redisconn import RedisCredentials, credential_hint, make_client
from tests.e2e import eventually
from tests.processor import Processor
from tests.redisprod import (
    PASSWORD,
    SENTINEL_PASSWORD,
    USER,
    Pki,
    SentinelSet,
    make_pki,
    start_tls_sentinels,
    tls_admin,
)

QUEUE = "orders"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[SentinelSet]:
    group = start_tls_sentinels(tmp_path_factory.mktemp("servers"), pki)
    yield group
    group.stop()


def _annotations(group: SentinelSet, tls: str = "true") -> dict[str, str]:
    return {
        ANNOTATION_PREFIX + "redis-list": QUEUE,
        ANNOTATION_PREFIX + "messages-per-replica": "10",
        ANNOTATION_PREFIX + "redis-sentinels": group.addresses,
        ANNOTATION_PREFIX + "redis-sentinel-master": group.name,
        ANNOTATION_PREFIX + "redis-sentinel-tls": tls,
    }


def _secret(pki: Pki) -> dict[str, bytes]:
    return {
        "ca.crt": pki.ca.read_bytes(),
        "username": USER.encode(),
        "password": PASSWORD.encode(),
        "sentinel-password": SENTINEL_PASSWORD.encode(),
    }


async def test_the_controller_reaches_the_master_through_tls_sentinels_with_a_password(
    sentinels: SentinelSet, pki: Pki
) -> None:
    (trigger,) = parse_spec(_annotations(sentinels)).triggers
    assert isinstance(trigger, RedisTrigger) and trigger.redis_url is not None
    assert trigger.redis_url.startswith("rediss+sentinel://")
    credentials = RedisCredentials.from_secret(_secret(pki), "Secret apps/redis-auth")
    client = make_client(trigger.redis_url, credentials=credentials)
    try:
        await client.delete(QUEUE)
        await client.lpush(QUEUE, *[b"m%d" % i for i in range(7)])
        assert await client.llen(QUEUE) == 7
    finally:
        await client.aclose()
    # Written on the master the sentinels named: the one the fixture started.
    assert tls_admin(sentinels.master.port, pki).llen(QUEUE) == 7


@pytest.mark.parametrize(
    ("key", "named"),
    [("sentinel-password", "credentials from Secret apps/redis-auth"),
     ("ca.crt", "TLS: CA and client certificate from Secret apps/redis-auth")],
    ids=["wrong-sentinel-password", "another-ca"],
)  # fmt: skip
async def test_a_wrong_sentinel_password_or_ca_fails_naming_the_secret(
    sentinels: SentinelSet, pki: Pki, key: str, named: str, tmp_path: Path
) -> None:
    (trigger,) = parse_spec(_annotations(sentinels)).triggers
    assert isinstance(trigger, RedisTrigger) and trigger.redis_url is not None
    # A wrong password, or another CA's certificate (the servers' do not verify against it)
    wrong = b"wrong" if key == "sentinel-password" else make_pki(tmp_path).ca.read_bytes()
    data = {**_secret(pki), key: wrong}
    credentials = RedisCredentials.from_secret(data, "Secret apps/redis-auth")
    client = make_client(trigger.redis_url, credentials=credentials, connect_timeout_s=1.0)
    try:
        with pytest.raises(Exception) as caught:
            await client.ping()
    finally:
        await client.aclose()
    # What the controller's source and the sidecar append to the error: where to look.
    assert named in credential_hint(caught.value, "Secret apps/redis-auth"), caught.value


def test_redis_sentinel_tls_needs_redis_sentinels() -> None:
    annotations = {ANNOTATION_PREFIX + "redis-list": QUEUE,
                   ANNOTATION_PREFIX + "messages-per-replica": "10",
                   ANNOTATION_PREFIX + "redis-sentinel-tls": "true"}  # fmt: skip
    with pytest.raises(InvalidSpecError) as caught:
        parse_spec(annotations)
    assert caught.value.key == ANNOTATION_PREFIX + "redis-sentinel-tls"
    assert "only with redis-sentinels" in str(caught.value)


async def test_the_sidecar_consumes_through_tls_sentinels_with_a_password(
    sentinels: SentinelSet, pki: Pki, tmp_path: Path
) -> None:
    bodies = [b"id-%04d" % i for i in range(200)]
    master = tls_admin(sentinels.master.port, pki)
    master.delete(QUEUE)
    master.lpush(QUEUE, *bodies)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
    env.update(REDIS_USERNAME=USER, REDIS_PASSWORD=PASSWORD, REDIS_CA_FILE=str(pki.ca),
               REDIS_SENTINEL_PASSWORD=SENTINEL_PASSWORD)  # fmt: skip
    log = tmp_path / "sidecar.log"
    async with Processor() as processor:
        args = [sys.executable, "-m", "autoscaler", "consume", "--queue", QUEUE, "--forward",
                processor.url, "--sentinels", sentinels.addresses, "--sentinel-master",
                sentinels.name, "--sentinel-tls", "--id", "pod-tls", "--concurrency", "4",
                "--heartbeat-interval", "0.2"]  # fmt: skip
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                *args, stdout=out, stderr=asyncio.subprocess.STDOUT, env=env
            )
        try:
            await eventually(lambda: set(processor.accepted) == set(bodies), 60, "every id")
        finally:
            proc.terminate()
            async with asyncio.timeout(20):
                code = await proc.wait()
    assert set(processor.accepted) == set(bodies)
    assert code == 0, log.read_text()[-2000:]
