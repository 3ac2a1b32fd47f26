"""The Redis source and the source pool, against real redis-servers."""

from __future__ import annotations

import asyncio
import contextlib
import random
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio.connection import Connection
from redis.exceptions import ResponseError

from autoscaler import keys
from autoscaler.errors import SourceError, TransientSourceError
from autoscaler.policy.spec import PrometheusTrigger, RedisTrigger, Trigger
from autoscaler.policy.state import Reading
from autoscaler.redisconn import RedisCredentials, make_client
from autoscaler.remote import Backoff, EnvSecret, redact_url
from autoscaler.sources import Source, SourcePool
from autoscaler.sources.redis import (
    QueueStats,
    RedisSource,
    _eval_refused,
    parse_lua_reply,
    readings_for,
)
from autoscaler.sources.redisreply import ReadingMemo
from tests.servers import RedisServer, free_port, wait_until

MODES = [pytest.param(True, id="lua"), pytest.param(False, id="pipeline")]


class CountingConnection(Connection):
    """Counts requests sent: one per command, one per whole pipeline (= round trips)."""

    sent = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.sent += 1
        await super().send_packed_command(command, check_health)


async def fill(
    client: aioredis.Redis, queue: str, backlog: int, held: Sequence[int] = (), live: int = 0
) -> None:
    """``backlog`` messages in ``queue``; one registered consumer per entry of ``held``,
    the first ``live`` of them with a lease (alive)."""
    if backlog:
        await client.rpush(queue, *[f"m{i}" for i in range(backlog)])
    for n, count in enumerate(held):
        consumer = f"{queue.replace(':', '-')}-c{n}"
        await client.sadd(keys.consumers_key(queue), consumer)
        if count:
            await client.rpush(keys.processing_key(queue, consumer), *["x"] * count)
        if n < live:
            await client.set(keys.lease_key(consumer), "1", px=10_000)


@pytest.mark.parametrize("use_lua", MODES)
async def test_backlog_in_flight_and_processed(
    redis_url: str, redis_client: aioredis.Redis, use_lua: bool
) -> None:
    await fill(redis_client, "jobs", 5, held=[2, 0, 3], live=2)
    await fill(redis_client, "other", 1)
    await redis_client.set(keys.processed_key("jobs"), 40)
    await redis_client.rpush(keys.processing_key("jobs", "unregistered"), "not counted")
    src = RedisSource(redis_url, use_lua=use_lua)
    try:
        counted, uncounted, both, empty = await src.read(
            [
                RedisTrigger(("jobs",), 10),
                RedisTrigger(("jobs",), 10, count_in_flight=False),
                RedisTrigger(("jobs", "other"), 10),
                RedisTrigger(("missing",), 10),
            ]
        )
    finally:
        await src.aclose()
    assert counted == Reading(10, backlog=5, in_flight=5, processed_total=40, consumers=2)
    assert uncounted == Reading(5, backlog=5, in_flight=5, processed_total=40, consumers=2)
    assert both == Reading(11, backlog=6, in_flight=5, processed_total=40, consumers=2)
    assert empty == Reading(0, backlog=0, in_flight=0, processed_total=0, consumers=0)
    assert src.mode == ("lua" if use_lua else "pipeline")


@pytest.mark.parametrize("use_lua", MODES)
async def test_quarantined_messages_are_backlog(
    redis_url: str, redis_client: aioredis.Redis, use_lua: bool
) -> None:
    """Quarantined messages wait for a consumer: the backlog is the queue plus them; a
    quarantine of the wrong type fails only its queue's trigger."""
    await fill(redis_client, "jobs", 2, held=[1], live=1)
    await redis_client.rpush(keys.quarantine_key("jobs"), "q1", "q2", "q3")
    await redis_client.rpush(keys.quarantine_key("only"), "q1")
    await redis_client.set(keys.quarantine_key("bad"), "not a list")
    src = RedisSource(redis_url, use_lua=use_lua)
    try:
        jobs, only, bad = await src.read(
            [RedisTrigger(("jobs",), 10), RedisTrigger(("only",), 10), RedisTrigger(("bad",), 10)]
        )
    finally:
        await src.aclose()
    assert jobs == Reading(6, backlog=5, in_flight=1, processed_total=0, consumers=1)
    assert only == Reading(1, backlog=1, in_flight=0, processed_total=0, consumers=0)
    assert bad.value is None and "WRONGTYPE" in (bad.error or ""), bad


@pytest.mark.parametrize("use_lua", MODES)
async def test_many_triggers_sharing_queues(
    redis_url: str, redis_client: aioredis.Redis, use_lua: bool
) -> None:
    rng = random.Random(7)
    sizes = {
        f"q{i}": (rng.randrange(50), [rng.randrange(4) for _ in range(i % 3)], rng.randrange(3))
        for i in range(40)
    }
    for queue, (backlog, held, live) in sizes.items():
        await fill(redis_client, queue, backlog, held, live)
    names = list(sizes)
    triggers = [RedisTrigger(tuple(rng.sample(names, rng.randint(1, 4))), 5) for _ in range(200)]
    src = RedisSource(redis_url, use_lua=use_lua)
    try:
        readings = await src.read(triggers)
    finally:
        await src.aclose()
    for trigger, reading in zip(triggers, readings, strict=True):
        backlog = sum(sizes[q][0] for q in trigger.lists)
        in_flight = sum(sum(sizes[q][1]) for q in trigger.lists)
        live = sum(min(sizes[q][2], len(sizes[q][1])) for q in trigger.lists)
        assert reading == Reading(backlog + in_flight, backlog, in_flight, 0, consumers=live)


@pytest.mark.parametrize("use_lua", MODES)
async def test_queue_names_that_cannot_be_joined(
    redis_url: str, redis_client: aioredis.Redis, use_lua: bool
) -> None:
    """The script gets names joined by newlines; odd names travel apart, in order."""
    names = ["plain", "two\nlines", "", "\n", "ünï cödé", "last"]
    for n, name in enumerate(names):
        await fill(redis_client, name, n + 1, [n], live=n % 2)
    src = RedisSource(redis_url, use_lua=use_lua)
    try:
        readings = await src.read([RedisTrigger((name,), 1) for name in names])
    finally:
        await src.aclose()
    assert [r.backlog for r in readings] == [1, 2, 3, 4, 5, 6]
    assert [r.in_flight for r in readings] == [0, 1, 2, 3, 4, 5]
    assert [r.consumers for r in readings] == [0, 1, 0, 1, 0, 1]


@pytest.mark.parametrize("use_lua", MODES)
async def test_only_consumers_with_a_lease_are_live(
    redis_url: str, redis_client: aioredis.Redis, use_lua: bool
) -> None:
    """A registered consumer counts once its lease exists: one starting pod serves nothing."""
    for consumer in ("alive", "starting"):
        await redis_client.sadd(keys.consumers_key("jobs"), consumer)
    await redis_client.set(keys.lease_key("alive"), "1", px=10_000)
    await redis_client.set(keys.lease_key("elsewhere"), "1", px=10_000)  # not registered
    await fill(redis_client, "more", 0, [0, 0], live=2)
    src = RedisSource(redis_url, use_lua=use_lua)
    try:
        jobs, summed = await src.read(
            [RedisTrigger(("jobs",), 1), RedisTrigger(("jobs", "more"), 1)]
        )
        assert jobs.consumers == 1 and summed.consumers == 3
        await redis_client.delete(keys.lease_key("alive"))  # lease expired
        (gone,) = await src.read([RedisTrigger(("jobs",), 1)])
        assert gone == Reading(0, 0, 0, 0, consumers=0)
    finally:
        await src.aclose()
    assert src.mode == ("lua" if use_lua else "pipeline")


async def test_lease_keys_refused_fail_only_that_queue(own_redis: RedisServer) -> None:
    """NOPERM on a lease key comes back in the consumers slot (pcall) in both paths."""
    admin = aioredis.Redis.from_url(own_redis.url)
    patterns = ["jobs*", "plain*", "queue-autoscaler:consumers:*", "queue-autoscaler:processed:*"]
    await admin.acl_setuser(
        "scaler", enabled=True, passwords=["+s3cret"], keys=patterns, commands=["+@all"]
    )
    await fill(admin, "jobs", 3, [1], live=1)
    await fill(admin, "plain", 2)
    creds = RedisCredentials.from_env({"REDIS_USERNAME": "scaler", "REDIS_PASSWORD": "s3cret"})
    try:
        for use_lua in (True, False):
            src = RedisSource(own_redis.url, credentials=creds, use_lua=use_lua)
            try:
                jobs, plain = await src.read(
                    [RedisTrigger(("jobs",), 1), RedisTrigger(("plain",), 1)]
                )
            finally:
                await src.aclose()
            assert src.mode == ("lua" if use_lua else "pipeline")
            assert jobs.value is None and jobs.error is not None
            assert "live consumers of jobs" in jobs.error and "access" in jobs.error
            assert plain == Reading(2, 2, 0, 0, consumers=0)
    finally:
        await admin.aclose()


async def command_stats(client: aioredis.Redis) -> dict[str, int]:
    info = await client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in info.items()}


async def test_one_round_trip_per_cycle(redis_url: str, redis_client: aioredis.Redis) -> None:
    """Server side: the cycle's only command is one EVALSHA (the rest is the script's)."""
    held = {f"q{i}": [1, 2] for i in range(30)}
    for queue, counts in held.items():
        await fill(redis_client, queue, 3, counts)
    triggers = [RedisTrigger((q,), 1) for q in held] + [RedisTrigger(("q0", "q1"), 1)]
    client = make_client(
        redis_url, RedisCredentials.from_env({}), connection_class=CountingConnection
    )
    src = RedisSource(redis_url, client=client)
    try:
        await src.read(triggers)  # warm-up: connects and loads the script (EVAL on NOSCRIPT)
        before, sent = await command_stats(redis_client), CountingConnection.sent
        readings = await src.read(triggers)
        after = await command_stats(redis_client)
        assert CountingConnection.sent - sent == 1
    finally:
        await src.aclose()
    assert all(r.value == 6 for r in readings[:-1]) and readings[-1].value == 12
    delta = {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}
    queues = len(held)
    # Inside the script: per queue one SMEMBERS, one GET, two LLEN (the queue and its
    # quarantine); per consumer one LLEN and one EXISTS.
    assert delta == {
        "evalsha": 1,
        "smembers": queues,
        "get": queues,
        "llen": 4 * queues,
        "exists": 2 * queues,
        "info": 1,
    }


async def test_script_calls_are_chunked_in_one_round_trip(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    """Ten queues in calls of three: four EVALSHAs, one round trip, the same readings as a
    single call — also right after SCRIPT FLUSH (the first call of the pipeline is an EVAL)."""
    for i in range(10):
        await fill(redis_client, f"c{i}", i, [i % 3, 1], live=i % 2)
    triggers = [RedisTrigger((f"c{i}",), 1) for i in range(10)] + [
        RedisTrigger(("c9", "c0", "c4"), 1, count_in_flight=False)
    ]
    whole = RedisSource(redis_url)
    client = make_client(
        redis_url, RedisCredentials.from_env({}), connection_class=CountingConnection
    )
    chunked = RedisSource(redis_url, client=client, chunk_queues=3)
    try:
        expected = await whole.read(triggers)
        assert all(r.error is None for r in expected)
        await redis_client.script_flush()
        assert await chunked.read(triggers) == expected  # NOSCRIPT: EVAL first, then EVALSHA
        before, sent = await command_stats(redis_client), CountingConnection.sent
        assert await chunked.read(triggers) == expected
        assert CountingConnection.sent - sent == 1
        assert (await command_stats(redis_client))["evalsha"] - before["evalsha"] == 4
    finally:
        await whole.aclose()
        await chunked.aclose()


async def test_pipeline_takes_two_round_trips(redis_url: str, redis_client: aioredis.Redis) -> None:
    await fill(redis_client, "jobs", 2, [1])
    client = make_client(
        redis_url, RedisCredentials.from_env({}), connection_class=CountingConnection
    )
    src = RedisSource(redis_url, client=client, use_lua=False)
    try:
        await src.read([RedisTrigger(("jobs",), 1)])
        sent = CountingConnection.sent
        assert (await src.read([RedisTrigger(("jobs",), 1)]))[0].value == 3
        assert CountingConnection.sent - sent == 2
    finally:
        await src.aclose()


@pytest.mark.parametrize("use_lua", MODES)
async def test_bad_values_fail_only_their_triggers(
    redis_url: str, redis_client: aioredis.Redis, use_lua: bool
) -> None:
    await fill(redis_client, "good", 4)
    await fill(redis_client, "garbage", 1)
    await redis_client.set(keys.processed_key("garbage"), "12abc")
    await redis_client.set("wrongtype", "not a list")
    await fill(redis_client, "badset", 1)
    await redis_client.set(keys.consumers_key("badset"), "not a set")
    src = RedisSource(redis_url, use_lua=use_lua)
    try:
        good, garbage, wrong, badset, mixed = await src.read(
            [
                RedisTrigger(("good",), 1),
                RedisTrigger(("garbage",), 1),
                RedisTrigger(("wrongtype",), 1),
                RedisTrigger(("badset",), 1),
                RedisTrigger(("good", "wrongtype"), 1),
            ]
        )
    finally:
        await src.aclose()
    assert good.value == 4
    assert garbage.value is None and garbage.error is not None
    assert keys.processed_key("garbage") in garbage.error and "12abc" in garbage.error
    assert wrong.error is not None and "wrongtype" in wrong.error and "WRONGTYPE" in wrong.error
    assert badset.error is not None and "in-flight of badset" in badset.error
    assert mixed.value is None and mixed.error is not None and redis_url in mixed.error


async def test_outage_fails_fast_then_recovers_without_a_new_source(
    own_redis: RedisServer,
) -> None:
    client = aioredis.Redis.from_url(own_redis.url)
    src = RedisSource(own_redis.url, backoff=Backoff(base_s=0.5, cap_s=0.5))
    trigger = RedisTrigger(("jobs",), 1)
    try:
        await client.rpush("jobs", "a", "b")
        assert (await src.read([trigger]))[0].value == 2
        own_redis.stop()
        failed = await src.read([trigger, trigger])
        assert all(r.value is None for r in failed)
        assert failed[0].error is not None and own_redis.url in failed[0].error
        assert "ConnectionError" in failed[0].error
        waiting = await src.read([trigger])  # within the backoff: no attempt ("backing off")
        assert waiting[0].error is not None and "backing off" in waiting[0].error
        own_redis.restart()  # empty: no persistence, and no script cache (NOSCRIPT → EVAL)
        await client.connection_pool.disconnect()
        await client.rpush("jobs", "c")
        deadline = time.monotonic() + 10
        while (reading := (await src.read([trigger]))[0]).value is None:
            assert time.monotonic() < deadline, reading.error
            await asyncio.sleep(0.05)
        assert reading.value == 1 and src.mode == "lua"
    finally:
        await src.aclose()
        await client.aclose()


@pytest.mark.looptime  # the source and the silent server share the loop's fake clock
async def test_a_server_that_never_answers_times_out() -> None:
    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.read()
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    src = RedisSource(f"redis://127.0.0.1:{port}/0", read_timeout_s=0.3, connect_timeout_s=0.3)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        (reading,) = await src.read([RedisTrigger(("jobs",), 1)])
        assert round(loop.time() - started, 6) == 0.3  # one read timeout, not a hang
        assert reading.value is None and reading.error is not None
        assert "Timeout" in reading.error
    finally:
        await src.aclose()
        server.close()
        await server.wait_closed()


async def test_eval_forbidden_falls_back_to_pipeline(own_redis: RedisServer) -> None:
    admin = aioredis.Redis.from_url(own_redis.url)
    await admin.acl_setuser(
        "scaler",
        enabled=True,
        passwords=["+s3cret"],
        keys=["*"],
        channels=["*"],
        commands=["+@all", "-@scripting"],
    )
    await fill(admin, "jobs", 3, [2])
    environ = {"REDIS_USERNAME": "scaler", "REDIS_PASSWORD": "s3cret"}
    src = RedisSource(own_redis.url, credentials=RedisCredentials.from_env(environ))
    try:
        (first,) = await src.read([RedisTrigger(("jobs",), 1)])
        assert first == Reading(5, 3, 2, 0, consumers=0) and src.mode == "pipeline"
        refused = (await admin.info("commandstats"))["cmdstat_evalsha"]["rejected_calls"]
        (second,) = await src.read([RedisTrigger(("jobs",), 1)])
        assert second.value == 5
        assert (await admin.info("commandstats"))["cmdstat_evalsha"]["rejected_calls"] == refused
        assert "scaler" in {client["user"] for client in await admin.client_list()}
    finally:
        await src.aclose()
        await admin.aclose()


async def test_password_file_is_read_per_connection_and_never_shown(
    own_redis: RedisServer, tmp_path: Path
) -> None:
    admin = aioredis.Redis.from_url(own_redis.url)
    await admin.config_set("requirepass", "first")
    secret = tmp_path / "password"
    secret.write_text("first\n")  # Secret files often end in a newline
    credentials = RedisCredentials.from_env({"REDIS_PASSWORD_FILE": str(secret)})
    src = RedisSource(
        own_redis.url, credentials=credentials, backoff=Backoff(base_s=0.01, cap_s=0.01)
    )
    try:
        assert (await src.read([RedisTrigger(("jobs",), 1)]))[0].value == 0
        await admin.config_set("requirepass", "second")
        await admin.client_kill_filter(_type="normal", skipme=True)  # drop src's connections
        secret.write_text("wrong")
        await asyncio.sleep(0.02)
        (bad,) = await src.read([RedisTrigger(("jobs",), 1)])
        assert bad.value is None and bad.error is not None and "wrong" not in bad.error
        secret.write_text("second")
        await asyncio.sleep(0.02)
        assert (await src.read([RedisTrigger(("jobs",), 1)]))[0].value == 0
    finally:
        await src.aclose()
        await admin.aclose()


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """A redis-server speaking only TLS, with a throwaway CA; yields (port, CA file)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=tmp_path, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "1",
        "-subj",
        "/CN=qa-ca",
    )
    openssl("req", *ec, "-keyout", "s.key", "-out", "s.csr", "-subj", "/CN=127.0.0.1")
    (tmp_path / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "s.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "s.crt", "-days", "1", "-extfile", "ext.cnf")  # fmt: skip
    port = free_port()
    process = subprocess.Popen(
        ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
         "--tls-cert-file", "s.crt", "--tls-key-file", "s.key", "--tls-ca-cert-file", "ca.crt",
         "--tls-auth-clients", "no", "--save", "", "--appendonly", "no"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(lambda: port_open(port), 10, "redis-server with TLS")
        yield port, tmp_path / "ca.crt"
    finally:
        process.terminate()
        process.wait(5)


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


async def test_rediss_urls_speak_tls(tls_redis: tuple[int, Path]) -> None:
    port, ca = tls_redis
    trusted = RedisSource(f"rediss://127.0.0.1:{port}/0?ssl_ca_certs={ca}")
    untrusted = RedisSource(f"rediss://127.0.0.1:{port}/0")
    plain = RedisSource(f"redis://127.0.0.1:{port}/0", read_timeout_s=0.5)
    try:
        assert (await trusted.read([RedisTrigger(("jobs",), 1)]))[0].value == 0
        (refused,) = await untrusted.read([RedisTrigger(("jobs",), 1)])
        assert refused.error is not None and "certificate verify failed" in refused.error
        assert (await plain.read([RedisTrigger(("jobs",), 1)]))[0].value is None
    finally:
        for src in (trusted, untrusted, plain):
            await src.aclose()


async def test_environment_credentials_replace_the_urls() -> None:
    creds = RedisCredentials.from_env({"REDIS_USERNAME": "u", "REDIS_PASSWORD": "p"})
    client = make_client("rediss://x:leak@example.invalid:6380/2", creds)
    await client.aclose()
    kwargs = client.connection_pool.connection_kwargs
    assert kwargs.get("password") is None and kwargs["credential_provider"] is creds
    assert client.connection_pool.connection_class.__name__ == "SSLConnection"
    assert creds.get_credentials() == ("u", "p")
    assert RedisCredentials.from_env({"REDIS_PASSWORD": "p"}).get_credentials() == ("p",)
    assert not RedisCredentials.from_env({}).present


def test_bad_url_is_a_source_error_without_the_password() -> None:
    with pytest.raises(SourceError) as caught:
        RedisSource("http://user:hunter2@host/0", credentials=RedisCredentials.from_env({}))
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("rediss://user:pw@h/1", "rediss://user:***@h/1"),
        ("redis://token@h", "redis://***@h"),
        ("redis://h/0?password=pw&db=1", "redis://h/0?password=***&db=1"),
        ("http://u:p@prom:9090/x", "http://u:***@prom:9090/x"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_env_secret_file_wins_and_is_reread(tmp_path: Path) -> None:
    path = tmp_path / "s"
    path.write_text("one\n")
    secret = EnvSecret.from_env("X", {"X": "plain", "X_FILE": str(path)})
    assert secret.get() == "one"
    path.write_text("two")
    assert secret.get() == "two"
    path.unlink()
    with pytest.raises(SourceError, match="X_FILE"):
        secret.get()
    assert EnvSecret.from_env("X", {"X": "plain"}).get() == "plain"
    assert not EnvSecret.from_env("X", {}).present


def test_backoff_grows_caps_and_jitters() -> None:
    now = [0.0]
    backoff = Backoff(base_s=1, cap_s=8, clock=lambda: now[0], rng=random.Random(1))
    assert backoff.blocked() is None
    delays = [backoff.failed(f"e{i}") for i in range(7)]
    for n, delay in enumerate(delays):
        ceiling = min(8, 2**n)
        assert ceiling / 2 <= delay < ceiling
    assert (waiting := backoff.blocked()) is not None and waiting.startswith("e6")
    now[0] += 8
    assert backoff.blocked() is None
    assert backoff.succeeded() == 7 and backoff.succeeded() == 0


def test_eval_refusal_is_told_from_script_errors() -> None:
    assert _eval_refused(ResponseError("unknown command 'EVALSHA', with args beginning with:"))
    assert _eval_refused(ResponseError("NOPERM this user has no permissions to run 'evalsha'"))
    assert not _eval_refused(ResponseError("ERR user_script:1: Script attempted to access"))


redis_leaves = (
    st.none()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.binary(max_size=30)
    | st.booleans()
    | st.floats()
    | st.text(max_size=10)
    | st.builds(ResponseError, st.text(max_size=20))
)
redis_values = redis_leaves | st.lists(redis_leaves, max_size=3)


@given(
    queues=st.lists(st.text(min_size=1, max_size=5), max_size=4, unique=True),
    reply=redis_values | st.lists(redis_values, max_size=12),
)
def test_any_reply_gives_readings_or_a_server_error(queues: list[str], reply: object) -> None:
    triggers = [RedisTrigger((q,), 1) for q in queues] + [RedisTrigger(tuple(queues) or ("z",), 1)]
    try:
        results = parse_lua_reply(queues, reply)
    except TransientSourceError:
        return
    readings = readings_for("redis://h", triggers, results)
    assert len(readings) == len(triggers)
    for reading in readings:
        assert (reading.value is None) == (reading.error is not None)
        assert reading.value is None or reading.value >= 0


@given(data=st.data(), queues=st.lists(st.text(max_size=3), max_size=4, unique=True))
def test_any_well_shaped_reply_gives_one_reading_per_trigger(
    data: st.DataObject, queues: list[str]
) -> None:
    reply = data.draw(st.lists(redis_values, min_size=4 * len(queues), max_size=4 * len(queues)))
    triggers = [RedisTrigger((q,), 1) for q in queues]
    readings = readings_for("redis://h", triggers, parse_lua_reply(queues, reply))
    assert len(readings) == len(triggers)
    assert all((r.value is None) == (r.error is not None) for r in readings)


@given(st.lists(st.integers(0, 2**40), min_size=8, max_size=8), st.booleans())
def test_well_formed_replies_parse(numbers: list[int], raw_counter: bool) -> None:
    reply: list[object] = list(numbers)
    if raw_counter:  # a counter too long for Lua comes back as a string: the slow path
        reply[2] = str(numbers[2]).encode()
    results = parse_lua_reply(["a", "b"], reply)
    assert results == {"a": QueueStats(*numbers[:4]), "b": QueueStats(*numbers[4:])}
    triggers = [RedisTrigger(("a",), 1), RedisTrigger(("b",), 1), RedisTrigger(("a", "b"), 1)]
    (a, b, ab) = readings_for("s", triggers, results)
    for reading, (backlog, in_flight, processed, live) in ((a, numbers[:4]), (b, numbers[4:])):
        assert reading == Reading(backlog + in_flight, backlog, in_flight, processed, None, live)
    assert ab.consumers == numbers[3] + numbers[7] and ab.processed_total == numbers[2] + numbers[6]


def test_reply_slots_are_backlog_in_flight_processed_consumers() -> None:
    with pytest.raises(TransientSourceError, match="3 items for 1 queues"):
        parse_lua_reply(["a"], [1, 2, 3])  # the old three-slot shape
    results = parse_lua_reply(["a", "b"], [1, 2, 3, 4, 5, 6, 7, ResponseError("NOPERM lease")])
    assert results["a"] == QueueStats(backlog=1, in_flight=2, processed=3, consumers=4)
    assert results["b"] == "live consumers of b: NOPERM lease"


memo_values = st.sampled_from([0, 1, 2, -1, True, 1.0, b"1", b"x", None]) | st.builds(
    ResponseError, st.sampled_from(["NOPERM a", "WRONGTYPE b"])
)
# a queue's four values: often one of a few that are equal (==) but parse differently
memo_quads = st.sampled_from(
    [(1, 1, 1, 1), (True, 1, 1, 1), (1, 1.0, 1, 1), (1, 1, b"1", 1), (1, 1, None, 1), (0, 0, 0, 0)]
) | st.tuples(memo_values, memo_values, memo_values, memo_values)


@settings(max_examples=400)
@given(
    data=st.data(),
    names=st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=4, unique=True),
    steps=st.integers(1, 12),
    sweep_every=st.integers(1, 4),
)
def test_memo_reads_exactly_as_parsing_afresh(
    data: st.DataObject, names: list[str], steps: int, sweep_every: int
) -> None:
    """Whatever replies come, in whatever batches, by whichever path: the memo's readings
    are the ones ``parse_lua_reply`` + ``readings_for`` build from scratch (a small
    alphabet of values, so that repeats, and equal values of other types, are common)."""
    memo = ReadingMemo("redis://h", sweep_every=sweep_every)
    queues: list[str] = []
    triggers: list[RedisTrigger] = []
    for _ in range(steps):
        if not triggers or data.draw(st.integers(0, 2)) == 0:  # else the same batch again
            queues = data.draw(st.permutations(names))[: data.draw(st.integers(1, len(names)))]
            lists = st.lists(st.sampled_from(queues), min_size=1, max_size=2).map(tuple)
            trigger = st.builds(RedisTrigger, lists, st.just(1.0), count_in_flight=st.booleans())
            triggers = data.draw(st.lists(trigger, min_size=1))
        quad = memo_quads if data.draw(st.booleans()) else st.tuples(*[st.integers(0, 1)] * 4)
        quads = data.draw(st.lists(quad, min_size=len(queues), max_size=len(queues)))
        reply = [value for quad in quads for value in quad]
        expected = readings_for("redis://h", triggers, parse_lua_reply(queues, reply))
        path = data.draw(st.sampled_from(["batch", "batch", "batch", "script", "pipeline"]))
        if path == "batch":
            assert memo.read_batch(triggers, queues, reply) == expected
            continue
        if path == "script":
            memo.take_reply(queues, reply)
        else:  # the pipeline's path gives parsed results
            memo.take_results(parse_lua_reply(queues, reply))
        assert memo.readings(triggers) == expected


def test_memo_sweep_keeps_the_queues_of_an_unchanged_batch() -> None:
    """A batch read positionally for a while is still read: a sweep must not drop its
    queues, or the next change of one list leaves its partner "not read"."""
    memo = ReadingMemo("s", sweep_every=1)
    triggers, queues = [RedisTrigger(("a", "b"), 1.0)], ["a", "b"]
    for _ in range(3):
        [reading] = memo.read_batch(triggers, queues, [1, 1, 1, 1, 1, 1, 1, 1])
    [reading] = memo.read_batch(triggers, queues, [0, 1, 1, 1, 1, 1, 1, 1])
    assert reading == Reading(3, 1, 2, 2, None, 2)


class FakeSource:
    def __init__(self, url: str, log: list[str]) -> None:
        self.url, self.log, self.closed = url, log, False
        log.append(url)

    async def read(self, triggers: Sequence[Any]) -> list[Reading]:
        if "boom" in self.url:
            raise RuntimeError("bug")
        return [Reading(float(len(self.url)))] * len(triggers)

    async def aclose(self) -> None:
        self.closed = True


async def test_pool_keeps_one_source_per_server_and_isolates_failures(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    await fill(redis_client, "jobs", 3)
    made: list[str] = []
    pool: Source[Trigger] = SourcePool(
        redis_url=redis_url,
        prometheus_url="http://prom",
        prometheus_factory=lambda url: FakeSource(url, made),
    )
    dead = "redis://127.0.0.1:1/0"
    triggers: list[Trigger] = [
        RedisTrigger(("jobs",), 1),
        PrometheusTrigger("up", 1),
        RedisTrigger(("jobs",), 1, redis_url=redis_url),
        RedisTrigger(("jobs",), 1, redis_url=dead),
        PrometheusTrigger("up", 1, url="http://boom"),
        PrometheusTrigger("up", 1, url="http://prom"),
    ]
    try:
        for _ in range(2):
            readings = await pool.read(triggers)
            assert [r.value for r in readings] == [3, 11, 3, None, None, 11]
            assert readings[3].error is not None and dead in readings[3].error
            assert readings[4].error is not None and "RuntimeError" in readings[4].error
        assert made == ["http://prom", "http://boom"]
        assert isinstance(pool, SourcePool) and pool.redis() is pool.redis(redis_url)
        as_protocol: Source[RedisTrigger] = pool.redis()  # RedisSource is a Source
        assert isinstance(as_protocol, RedisSource)
    finally:
        await pool.aclose()
    assert await SourcePool().read([RedisTrigger(("q",), 1), PrometheusTrigger("up", 1)]) == [
        Reading.failed("the trigger has no redis-url and --redis-url is not set"),
        Reading.failed("the trigger has no prometheus url and --prometheus-url is not set"),
    ]


async def test_pool_reports_an_unusable_url_as_failed_readings() -> None:
    pool = SourcePool()
    try:
        (reading,) = await pool.read([RedisTrigger(("q",), 1, redis_url="http://u:pw@h")])
    finally:
        await pool.aclose()
    assert reading.error is not None and "unusable redis url" in reading.error
    assert "pw" not in reading.error
