"""Scale-in protection: the sidecar's /protection endpoint, its record in Redis, and the
drain never choosing a protected replica — against a real redis-server."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from autoscaler import keys, redisqueue
from autoscaler.annotations import spec_with
from autoscaler.consumer.logs import ConsumerLog
from autoscaler.consumer.protection import (
    DEFAULT_PROTECTION_S,
    ProtectionEndpoint,
    ProtectionRequest,
    from_loopback,
    parse_request,
)
from autoscaler.drain import SCALE_DOWN_PROTECTED, Candidate, Drainer, pick_victims
from autoscaler.keys import Command, ConsumerField, ConsumerState
from autoscaler.kube import KubeClient
from autoscaler.logs import FIELDS
from autoscaler.metrics import ControllerMetrics, start_http_server
from autoscaler.policy import RedisTrigger
from autoscaler.redisconn import make_client
from autoscaler.targets.kubernetes import KubeTarget
from autoscaler.worker import Worker
from autoscaler.workload import ReplicaInfo, WorkloadRef
from tests.e2e import LIVE, eventually
from tests.fakekube import FakeKubeServer
from tests.fakekube.fixtures import fake_kube as fake_kube
from tests.kubeutil import kube as kube
from tests.kubeutil import metrics as metrics
from tests.kubeutil import workload
from tests.processor import Processor
from tests.servers import free_port

Q = "jobs"
SPEC = spec_with((RedisTrigger((Q,), 10),))


# ---- the request body ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"enabled": true}', ProtectionRequest(True, DEFAULT_PROTECTION_S)),
        (b'{"enabled": true, "expiresInSeconds": 60}', ProtectionRequest(True, 60)),
        (b'{"enabled": true, "expiresInSeconds": 172800}', ProtectionRequest(True, 172_800)),
        (b'{"enabled": false}', ProtectionRequest(False, DEFAULT_PROTECTION_S)),
    ],
)
def test_valid_bodies(body: bytes, expected: ProtectionRequest) -> None:
    assert parse_request(body) == expected


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"", "body is not JSON"),
        (b"\xff", "body is not JSON"),
        (b"[true]", "must be a JSON object"),
        (b"{}", "enabled: must be true or false, not null"),
        (b'{"enabled": "yes"}', 'enabled: must be true or false, not "yes"'),
        (b'{"enabled": true, "expiresInSeconds": 0}', "0 is out of range 1..172800"),
        (b'{"enabled": true, "expiresInSeconds": 172801}', "172801 is out of range"),
        (b'{"enabled": true, "expiresInSeconds": 1.5}', "whole number of seconds, not 1.5"),
        (b'{"enabled": true, "expiresInSeconds": true}', "whole number of seconds, not true"),
        (b'{"enabled": true, "expiresInMinutes": 5}', "unknown field 'expiresInMinutes'"),
    ],
)
def test_bad_bodies_name_the_problem(body: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_request(body)


@given(st.binary(max_size=64) | st.builds(lambda v: json.dumps(v).encode(), st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["enabled", "expiresInSeconds", "x"]), inner, max_size=3),
    max_leaves=6)))  # fmt: skip
def test_any_body_is_accepted_or_refused_with_a_value_error(body: bytes) -> None:
    try:
        request = parse_request(body)
    except ValueError as e:
        assert "\n" not in str(e)
    else:
        assert 1 <= request.expires_in_s <= redisqueue.MAX_PROTECTION_S


@pytest.mark.parametrize(
    ("remote", "ok"),
    [("127.0.0.1", True), ("127.0.0.5", True), ("::1", True), ("::ffff:127.0.0.1", True),
     ("10.0.0.7", False), ("::ffff:10.0.0.7", False), (None, False), ("unix", False)],
)  # fmt: skip
def test_only_loopback_clients_may_protect(remote: str | None, ok: bool) -> None:
    assert from_loopback(remote) is ok


# ---- the endpoint, over HTTP -------------------------------------------------------------


@pytest.fixture
async def endpoint(redis_client: aioredis.Redis) -> AsyncIterator[str]:
    protection = ProtectionEndpoint("pod-1", Q, ConsumerLog(logging.getLogger("t"), Q, "pod-1"))
    protection.redis = redis_client
    port = free_port()
    runner = await start_http_server(CollectorRegistry(), port, host="127.0.0.1",
                                     routes=protection.routes())  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}/protection"
    finally:
        await runner.cleanup()


async def test_put_then_get_shows_protection_recorded_in_redis(
    endpoint: str, redis_client: aioredis.Redis
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(endpoint) as reply:
            assert reply.status == 200 and await reply.json() == {"enabled": False}
        before = time.time()
        async with http.put(endpoint, json={"enabled": True, "expiresInSeconds": 600}) as reply:
            assert reply.status == 200
            put = await reply.json()
        async with http.get(endpoint) as reply:
            got = await reply.json()
    assert put["enabled"] and got["enabled"]
    assert 599 <= got["expiresInSeconds"] <= 600
    expires_at = got["expiresAt"]
    assert expires_at.endswith("Z")
    ttl_ms = await redis_client.pttl(keys.protection_key("pod-1", Q))
    assert 599_000 <= ttl_ms <= 600_000
    from datetime import datetime

    at = datetime.fromisoformat(expires_at.replace("Z", "+00:00")).timestamp()
    assert before + 598 <= at <= time.time() + 601


async def test_default_expiry_is_two_hours_and_disable_ends_it(
    endpoint: str, redis_client: aioredis.Redis
) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.put(endpoint, data=b'{"enabled": true}') as reply:
            assert (await reply.json())["expiresInSeconds"] == 7200
        async with http.put(endpoint, json={"enabled": False}) as reply:
            assert reply.status == 200 and await reply.json() == {"enabled": False}
    assert not await redis_client.exists(keys.protection_key("pod-1", Q))


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b'{"enabled": true, "expiresInSeconds": 999999}', "out of range 1..172800"),
        (b"enabled=true", "body is not JSON"),
        (b'{"enabled": 1}', "enabled: must be true or false"),
    ],
)
async def test_bad_input_is_a_400_with_a_clear_message(
    endpoint: str, redis_client: aioredis.Redis, body: bytes, problem: str
) -> None:
    async with aiohttp.ClientSession() as http, http.put(endpoint, data=body) as reply:
        assert reply.status == 400
        error = (await reply.json())["error"]
    assert error.startswith("PUT /protection: ") and problem in error
    assert not await redis_client.exists(keys.protection_key("pod-1", Q))


async def test_without_redis_the_answer_is_a_503_saying_so() -> None:
    protection = ProtectionEndpoint("pod-1", Q, ConsumerLog(logging.getLogger("t"), Q, "pod-1"))
    port = free_port()
    runner = await start_http_server(CollectorRegistry(), port, host="127.0.0.1",
                                     routes=protection.routes())  # fmt: skip
    url = f"http://127.0.0.1:{port}/protection"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as reply:  # the sidecar has no client yet
                assert reply.status == 503
                assert (await reply.json())["error"] == "not connected to Redis yet"
            protection.redis = make_client("redis://127.0.0.1:1/0")  # nothing listens there
            async with http.put(url, json={"enabled": True}) as reply:
                assert reply.status == 503
                assert "could not record the protection in Redis" in (await reply.json())["error"]
            await protection.redis.aclose()
    finally:
        await runner.cleanup()


async def test_protection_expires_by_itself(endpoint: str) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.put(endpoint, json={"enabled": True, "expiresInSeconds": 1}) as reply:
            assert (await reply.json())["enabled"]

        async def expired() -> bool:
            async with http.get(endpoint) as reply:
                return bool(await reply.json() == {"enabled": False})

        await eventually(expired, 5.0, "protection expired")


async def test_the_sidecar_serves_protection_on_its_metrics_port(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    """The real ``autoscaler consume``: the processor's curl reaches Redis and the registry."""
    port = free_port()
    log = tmp_path / "consume.log"
    async with Processor() as proc:
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "autoscaler", "consume", "--redis-url", redis_url,
                "--queue", Q, "--forward", proc.url, "--id", "pod-7",
                "--heartbeat-interval", "0.2", "--metrics-port", str(port),
                stdout=out, stderr=out,
            )  # fmt: skip
        LIVE.add(process)
        url = f"http://127.0.0.1:{port}/protection"
        try:
            async with aiohttp.ClientSession() as http:

                async def put() -> bool:
                    try:
                        body = {"enabled": True, "expiresInSeconds": 300}
                        async with http.put(url, json=body) as reply:
                            return reply.status == 200
                    except aiohttp.ClientConnectionError:
                        return False  # not listening yet

                await eventually(put, 10.0, "PUT /protection answered")
                async with http.get(url) as reply:
                    assert (await reply.json())["enabled"]
            (info,) = await redisqueue.read_registry(redis_client, Q)
            assert info.consumer_id == "pod-7" and 299_000 <= info.protected_ms <= 300_000
        finally:
            process.terminate()
            assert await asyncio.wait_for(process.wait(), 15) == 0, log.read_text()
    assert "scale-in protection on for 300s" in log.read_text()


# ---- the drain never picks a protected replica ---------------------------------------


def _info(cid: str, in_flight: int, protected_ms: int = 0) -> redisqueue.ConsumerInfo:
    return redisqueue.ConsumerInfo(cid, True, ConsumerState.RUNNING, None, in_flight, cid,
                           protected_ms=protected_ms)  # fmt: skip


def test_protected_replicas_are_never_victims_however_cheap() -> None:
    def cand(name: str, created: float, in_flight: int, protected_ms: int = 0) -> Candidate:
        info = _info(name, in_flight, protected_ms)
        return Candidate(ReplicaInfo(name, True, created), ((None, info),))

    candidates = [cand("idle-protected", 9, 0, 5_000), cand("busy", 1, 5), cand("idle", 2, 0),
                  cand("newest-protected", 10, 0, 1)]  # fmt: skip
    assert [c.replica.name for c in pick_victims(candidates, 4)] == ["idle", "busy"]
    assert [c.replica.name for c in pick_victims(candidates, 1)] == ["idle"]


@pytest.fixture
async def pods(
    redis_url: str, fake_kube: FakeKubeServer, kube: KubeClient
) -> AsyncIterator[tuple[KubeTarget, dict[str, Worker]]]:
    """A Deployment of three pods (the fake API server's ReplicaSet honours the deletion
    cost), each pod an in-process ``Worker`` registered under its pod name."""
    fake_kube.create(workload("Deployment", "web", replicas=3))
    target = KubeTarget(kube, WorkloadRef("default", "web", "Deployment"))
    workers = {name: Worker(redis_url, Q, consumer_id=name, heartbeat_interval_s=0.1,
                            handle_signals=False)
               for name in fake_kube.pod_names("default", "app=web")}  # fmt: skip
    for worker in workers.values():
        await worker.__aenter__()
    try:
        yield target, workers
    finally:
        for worker in workers.values():
            await worker.__aexit__(None, None, None)


def protected_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    """The fields of the "scale-down protected" log lines."""
    lines = [getattr(r, FIELDS) for r in caplog.records if r.getMessage() == "scale-down protected"]
    assert all(fields["reason"] == SCALE_DOWN_PROTECTED for fields in lines)
    return lines


async def _no_recheck() -> int | None:
    return None


async def test_scale_down_drains_only_unprotected_replicas_and_waits_when_all_are(
    redis_client: aioredis.Redis,
    pods: tuple[KubeTarget, dict[str, Worker]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    target, workers = pods
    names = list(workers)
    for name in names[:2]:
        await workers[name].protect(600)
    drainer = Drainer(lambda url: redis_client, ControllerMetrics(CollectorRegistry()),
                      poll_interval_s=0.05)  # fmt: skip

    with caplog.at_level(logging.INFO, logger="autoscaler.drain"):
        written = await drainer.scale_down(target, SPEC, 3, 1, _no_recheck)
    assert written == 2  # one victim only: the other two are protected
    assert sorted(r.name for r in await target.replicas()) == sorted(names[:2])
    assert workers[names[2]].state is ConsumerState.DRAINED
    (held,) = protected_lines(caplog)
    assert held["protected"] == ",".join(sorted(names[:2])) and held["desired"] == 2

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="autoscaler.drain"):
        assert await drainer.scale_down(target, SPEC, 2, 1, _no_recheck) == 2  # waits
    assert sorted(r.name for r in await target.replicas()) == sorted(names[:2])
    for name in names[:2]:  # nobody was told to drain
        command = await redis_client.hget(keys.consumer_key(name, Q), ConsumerField.COMMAND.value)
        assert command in (None, Command.RUN.value.encode())
        assert workers[name].state is ConsumerState.RUNNING
    # the same replicas held at the same count: said once, not every polling interval
    assert protected_lines(caplog) == []


async def test_a_replica_is_a_victim_again_once_its_protection_expired(
    redis_client: aioredis.Redis,
    pods: tuple[KubeTarget, dict[str, Worker]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    target, workers = pods
    for worker in workers.values():
        await worker.protect(0.3)
    drainer = Drainer(lambda url: redis_client, ControllerMetrics(CollectorRegistry()),
                      poll_interval_s=0.05)  # fmt: skip
    with caplog.at_level(logging.INFO, logger="autoscaler.drain"):
        assert await drainer.scale_down(target, SPEC, 3, 2, _no_recheck) == 3  # all protected
    assert len(await target.replicas()) == 3
    (held,) = protected_lines(caplog)
    assert held["protected"] == ",".join(sorted(workers)) and held["desired"] == 3
    assert all(w.state is ConsumerState.RUNNING for w in workers.values())  # none drained

    async def unprotected() -> bool:
        return [await w.protection_s() for w in workers.values()] == [0, 0, 0]

    await eventually(unprotected, 5.0, "protection expired")
    assert await drainer.scale_down(target, SPEC, 3, 2, _no_recheck) == 2
    assert len(await target.replicas()) == 2
