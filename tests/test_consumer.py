"""The sidecar consumer against a real redis-server and a local aiohttp processor.

Most tests run the ``Worker`` in-process with short timings; the SIGTERM tests run the
real ``autoscaler consume`` command. Synchronisation is by polling with deadlines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import logging
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import aiohttp
import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from autoscaler import keys, redisqueue
from autoscaler.argtypes import non_negative_float
from autoscaler.consumer import ConsumerMetrics, ConsumerSettings, Worker
from autoscaler.consumer.cli import register, settings_from_args
from autoscaler.consumer.forward import Answer, classify
from autoscaler.consumer.logs import ConsumerLog
from autoscaler.consumer.worker import make_throttler
from autoscaler.errors import InputError
from autoscaler.keys import Command, ConsumerState
from autoscaler.logs import JsonFormatter, TextFormatter
from autoscaler.remote import redact_url
from tests.processor import Processor
from tests.servers import free_port

Q = "jobs"
FAST: dict[str, Any] = {
    "heartbeat_interval_s": 0.1,
    "take_timeout_s": 0.1,
    "backoff_base_s": 0.01,
    "backoff_max_s": 0.05,
    "request_timeout_s": 2.0,
    "drain_timeout_s": 5.0,
}


async def until(check: Callable[[], Any], what: str, timeout_s: float = 5.0) -> None:
    """Poll ``check`` (sync or async) until it is truthy, or fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.01)


@dataclass
class Running:
    worker: Worker
    task: asyncio.Task[None]
    registry: CollectorRegistry

    def count(self, outcome: str) -> float:
        labels = {"queue": Q, "outcome": outcome}
        return self.registry.get_sample_value("queue_consumer_messages_total", labels) or 0.0

    def sample(self, name: str) -> float:
        return self.registry.get_sample_value(name, {"queue": Q}) or 0.0


@contextlib.asynccontextmanager
async def consuming(
    redis: aioredis.Redis, url: str, consumer_id: str = "c1", **overrides: Any
) -> AsyncIterator[Running]:
    settings = ConsumerSettings(Q, url, consumer_id, **{**FAST, **overrides})
    registry = CollectorRegistry()
    async with aiohttp.ClientSession() as session:
        metrics = ConsumerMetrics(registry, Q)
        worker = Worker(redis, session, settings, metrics, rng=random.Random(4))
        task = asyncio.create_task(worker.run(), name="worker-under-test")
        try:
            yield Running(worker, task, registry)
        finally:
            worker.request_stop()
            worker.request_stop()  # cold: the test is over
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def state_of(redis: aioredis.Redis, consumer_id: str = "c1") -> ConsumerState | None:
    infos = {i.consumer_id: i for i in await redisqueue.read_registry(redis, Q)}
    info = infos.get(consumer_id)
    return info.state if info else None


async def held(redis: aioredis.Redis, consumer_id: str = "c1") -> list[bytes]:
    return cast(list[bytes], await redis.lrange(keys.processing_key(Q, consumer_id), 0, -1))


async def dead(redis: aioredis.Redis) -> list[bytes]:
    return cast(list[bytes], await redis.lrange(keys.dead_letter_key(Q), 0, -1))


async def reasons(redis: aioredis.Redis) -> list[bytes]:
    return cast(list[bytes], await redis.hvals(keys.dead_reasons_key(Q)))


async def test_acks_only_after_a_2xx(redis_client: aioredis.Redis) -> None:
    async with Processor() as proc, consuming(redis_client, proc.url) as c:
        proc.respond("hang")
        await redis_client.lpush(Q, b"m1")
        await until(lambda: proc.in_progress == 1, "the processor to get m1")
        assert await held(redis_client) == [b"m1"]
        assert await redis_client.get(keys.processed_key(Q)) is None

        async def in_flight_is_1() -> bool:
            return [i.in_flight for i in await redisqueue.read_registry(redis_client, Q)] == [1]

        await until(in_flight_is_1, "the registry to show 1 in flight")
        proc.release()
        await until(lambda: redis_client.get(keys.processed_key(Q)), "the ack")
        assert await held(redis_client) == []
        assert c.count("acked") == 1
        headers = proc.received[0].headers
        assert (headers["X-Queue"], headers["X-Consumer-Id"], headers["X-Delivery-Count"]) == (
            Q, "c1", "1",
        )  # fmt: skip


async def test_a_5xx_is_retried_until_it_succeeds(redis_client: aioredis.Redis) -> None:
    async with Processor() as proc, consuming(redis_client, proc.url) as c:
        proc.respond(500, 503, 200)
        await redis_client.lpush(Q, b"m")
        await until(lambda: proc.accepted == [b"m"], "m to be accepted")
        await until(lambda: c.count("acked") == 1, "the ack")
        counts = [r.headers["X-Delivery-Count"] for r in proc.received]
        assert counts == ["1", "2", "2"]  # a 503 is the processor down: not a delivery
        assert c.count("retried") == 1
        assert c.sample("queue_consumer_processor_unavailable_total") == 1
        assert await redis_client.hlen(keys.deliveries_key(Q)) == 0


async def test_always_500_is_dead_lettered_after_max_deliveries(
    redis_client: aioredis.Redis,
) -> None:
    async with (
        Processor(status=500) as proc,
        consuming(redis_client, proc.url, max_deliveries=3) as c,
    ):
        await redis_client.lpush(Q, b"poison")
        await until(lambda: dead(redis_client), "the dead-letter list")
        assert len(proc.received) == 3 and c.count("dead_lettered") == 1
        (reason,) = await reasons(redis_client)
        assert reason.startswith(b"HTTP 500 from processor")
        assert await held(redis_client) == [] and await redis_client.llen(Q) == 0


async def test_a_4xx_is_dead_lettered_at_once(redis_client: aioredis.Redis) -> None:
    async with Processor(status=400) as proc, consuming(redis_client, proc.url) as c:
        await redis_client.lpush(Q, b"bad")
        await until(lambda: dead(redis_client), "the dead-letter list")
        assert len(proc.received) == 1 and c.count("dead_lettered") == 1
        assert (await reasons(redis_client))[0].startswith(b"HTTP 400")


async def test_a_hang_past_the_request_timeout_is_retried(redis_client: aioredis.Redis) -> None:
    async with Processor() as proc, consuming(redis_client, proc.url, request_timeout_s=0.3) as c:
        proc.respond("hang", 200)
        await redis_client.lpush(Q, b"m")
        await until(lambda: proc.accepted == [b"m"], "the second delivery")
        assert proc.received[-1].headers["X-Delivery-Count"] == "2"
        await until(lambda: c.count("acked") == 1, "the ack")
        assert c.count("retried") == 1


async def test_connection_refused_is_not_a_delivery_and_nothing_lost(
    redis_client: aioredis.Redis,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/process"
    messages = {b"a", b"b", b"c"}
    async with consuming(redis_client, url, max_deliveries=1, concurrency=2) as c:
        await redis_client.lpush(Q, *messages)
        await until(lambda: c.sample("queue_consumer_processor_unavailable_total") >= 3, "probes")
        assert c.sample("queue_consumer_processor_up") == 0 and not c.worker.ready
        assert len(await held(redis_client)) == 2  # held, nothing new taken meanwhile
        async with Processor(port=port) as proc:
            await until(lambda: set(proc.accepted) == messages, "all three accepted")
            await until(lambda: c.count("acked") == 3, "three acks")
            assert {r.headers["X-Delivery-Count"] for r in proc.received} == {"1"}
        assert c.sample("queue_consumer_processor_up") == 1 and c.worker.ready
    assert await held(redis_client) == [] and await dead(redis_client) == []


async def test_a_too_large_message_is_dead_lettered_unsent(redis_client: aioredis.Redis) -> None:
    async with Processor() as proc, consuming(redis_client, proc.url, max_message_bytes=10) as c:
        await redis_client.lpush(Q, b"x" * 11, b"small")
        await until(lambda: c.count("acked") == 1 and c.count("dead_lettered") == 1, "both")
        assert [r.body for r in proc.received] == [b"small"]
        assert await dead(redis_client) == [b"x" * 11]
        assert b"--max-message-bytes" in (await reasons(redis_client))[0]


async def test_drain_finishes_held_takes_no_more_and_resumes_on_run(
    redis_client: aioredis.Redis,
) -> None:
    async with (
        Processor(latency_s=0.5) as proc,
        consuming(redis_client, proc.url, concurrency=2) as c,
    ):
        await redis_client.lpush(Q, b"m1", b"m2")
        await until(lambda: proc.in_progress == 2, "two messages held")
        assert await redisqueue.set_command(redis_client, "c1", Command.DRAIN)
        await until(lambda: c.worker.state is ConsumerState.DRAINING, "draining")
        await until(
            lambda: _is(state_of(redis_client), ConsumerState.DRAINING), "registry: draining"
        )
        await redis_client.lpush(Q, b"m3", b"m4")
        await until(lambda: _is(state_of(redis_client), ConsumerState.DRAINED), "drained")
        assert sorted(proc.accepted) == [b"m1", b"m2"]
        assert await redis_client.lrange(Q, 0, -1) == [b"m4", b"m3"]
        assert await held(redis_client) == []
        labels = {"queue": Q, "queue_consumer_state": "drained"}
        assert c.registry.get_sample_value("queue_consumer_state", labels) == 1

        assert await redisqueue.set_command(redis_client, "c1", Command.RUN)
        await until(lambda: len(proc.accepted) == 4, "m3 and m4 after the drain is cancelled")
        assert await state_of(redis_client) is ConsumerState.RUNNING


async def test_drain_timeout_pushes_held_messages_back(redis_client: aioredis.Redis) -> None:
    async with (
        Processor() as proc,
        consuming(redis_client, proc.url, concurrency=2, drain_timeout_s=0.3) as c,
    ):
        proc.respond("hang", "hang")
        await redis_client.lpush(Q, b"m1", b"m2")
        await until(lambda: proc.in_progress == 2, "two messages held")
        await redis_client.lpush(Q, b"m3")
        await redisqueue.set_command(redis_client, "c1", Command.DRAIN)
        await until(lambda: _is(state_of(redis_client), ConsumerState.DRAINED), "drained")
        assert sorted(await redis_client.lrange(Q, 0, -1)) == [b"m1", b"m2", b"m3"]
        assert (await redis_client.lrange(Q, 0, -1))[0] == b"m3"  # pushed back to the head
        assert await held(redis_client) == [] and c.count("pushed_back") == 2


async def test_a_fast_stream_drains_without_loss_or_duplicates(
    redis_client: aioredis.Redis,
) -> None:
    """One slot, a fast processor: it takes ahead; a drain mid-stream must return that too."""
    messages = [f"m{i:04d}".encode() for i in range(600)]
    await redis_client.lpush(Q, *messages)
    async with Processor() as proc, consuming(redis_client, proc.url) as c:
        await until(lambda: len(proc.accepted) >= 100, "100 messages processed")
        await redisqueue.set_command(redis_client, "c1", Command.DRAIN)
        await until(lambda: c.worker.state is ConsumerState.DRAINED, "drained")
        left = await redis_client.lrange(Q, 0, -1)
        assert sorted([*proc.accepted, *left]) == messages
        assert await held(redis_client) == []
        processed = int(await redis_client.get(keys.processed_key(Q)) or 0)
        assert processed == len(proc.accepted) == c.count("acked") < len(messages)
        # Only a message taken ahead and pushed back keeps a delivery count.
        assert await redis_client.hlen(keys.deliveries_key(Q)) <= 1


async def test_rate_limits_takes(redis_client: aioredis.Redis) -> None:
    """4/s: of six messages waiting, at most four are taken in the first second (counted
    on ``time.monotonic``, the limiter's clock); a loaded machine can only lower that."""
    await redis_client.lpush(Q, *(f"m{i}".encode() for i in range(6)))
    async with Processor() as proc:
        first_second_ends = time.monotonic() + 1.0  # no take can happen before this line
        async with consuming(redis_client, proc.url, rate_per_s=4.0):
            await until(lambda: len(proc.accepted) == 6, "six messages")
    assert sum(r.at < first_second_ends for r in proc.received) <= 4
    assert sorted(proc.accepted) == [f"m{i}".encode() for i in range(6)]


async def test_lease_expires_after_a_crash_and_the_reaper_requeues(
    redis_client: aioredis.Redis,
) -> None:
    async with Processor() as proc, consuming(redis_client, proc.url) as c:
        proc.respond("hang")
        await redis_client.lpush(Q, b"m")
        await until(lambda: proc.in_progress == 1, "m held")
        c.task.cancel()  # a crash: no drain, no farewell
        with contextlib.suppress(asyncio.CancelledError):
            await c.task

        async def lease_dead() -> bool:
            return [i.lease_alive for i in await redisqueue.read_registry(redis_client, Q)] == [
                False
            ]

        await until(lease_dead, "the lease to expire")
        ck = redisqueue.ConsumerKeys(Q, "c1")
        result = await redisqueue.requeue(
            redis_client, ck, max_deliveries=5, reason="r", forget=True
        )
        assert result == redisqueue.Requeued(0, 0, quarantined=1)  # held alone: the suspect
        assert await redis_client.lrange(ck.quarantine, 0, -1) == [b"m"]
        assert await redisqueue.read_registry(redis_client, Q) == []


async def test_restart_under_the_same_id_quarantines_leftovers_first(
    redis_client: aioredis.Redis,
) -> None:
    deliveries = keys.deliveries_key(Q)
    await redis_client.lpush(keys.processing_key(Q, "c1"), b"left", b"neighbour")
    await redis_client.hset(deliveries, keys.message_digest(b"left"), 1)
    await redis_client.hset(deliveries, keys.message_digest(b"neighbour"), 3)
    await redis_client.lpush(Q, b"new")
    async with Processor() as proc, consuming(redis_client, proc.url, max_deliveries=3):
        await until(lambda: len(proc.accepted) == 3, "all three processed")
        # Held together at the crash: neither is dead-lettered, nor charged for it; each is
        # delivered again alone before anything new is taken.
        assert proc.accepted == [b"left", b"neighbour", b"new"]
        assert [r.headers["X-Delivery-Count"] for r in proc.received] == ["1", "3", "1"]
        assert await dead(redis_client) == []


def _is(state: Awaitable[ConsumerState | None], expected: ConsumerState) -> Awaitable[bool]:
    async def check() -> bool:
        return await state is expected

    return check()


async def _consume_process(
    redis_url: str, url: str, log: Path, *flags: str
) -> asyncio.subprocess.Process:
    args = ["-m", "autoscaler", "consume", "--redis-url", redis_url, "--queue", Q]
    args += ["--forward", url, "--id", "sub-1", "--heartbeat-interval", "0.2", *flags]
    with log.open("wb") as stderr:  # the child keeps its own copy of the descriptor
        return await asyncio.create_subprocess_exec(
            sys.executable, *args, stdout=asyncio.subprocess.DEVNULL, stderr=stderr
        )


async def _exit_code(process: asyncio.subprocess.Process, log: Path) -> int:
    try:
        async with asyncio.timeout(10):
            return await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()
        output = log.read_text()  # noqa: ASYNC240  (a failing test's last words)
        pytest.fail(f"consume did not exit; its log:\n{output}")


async def test_sigterm_drains_held_messages_and_exits_0(
    redis_client: aioredis.Redis, redis_url: str, tmp_path: Path
) -> None:
    messages = [f"m{i}".encode() for i in range(20)]
    await redis_client.lpush(Q, *messages)
    log = tmp_path / "consume.log"
    async with Processor(latency_s=0.3) as proc:
        process = await _consume_process(redis_url, proc.url, log, "--concurrency", "4")
        await until(lambda: len(proc.received) >= 4, "four messages held", timeout_s=10)
        process.send_signal(signal.SIGTERM)
        assert await _exit_code(process, log) == 0, log.read_text()
    left = await redis_client.lrange(Q, 0, -1)
    assert sorted([*proc.accepted, *left]) == sorted(messages)  # nothing lost, no duplicate
    assert await held(redis_client, "sub-1") == []
    (info,) = await redisqueue.read_registry(redis_client, Q)
    assert info.state is ConsumerState.DRAINED and not info.lease_alive
    assert "drained in" in log.read_text()


async def test_second_sigterm_is_a_cold_stop_that_pushes_back(
    redis_client: aioredis.Redis, redis_url: str, tmp_path: Path
) -> None:
    messages = [f"m{i}".encode() for i in range(6)]
    await redis_client.lpush(Q, *messages)
    log = tmp_path / "consume.log"
    async with Processor() as proc:
        proc.respond(*["hang"] * 4)
        process = await _consume_process(
            redis_url, proc.url, log, "--concurrency", "4", "--drain-timeout", "60"
        )
        await until(lambda: proc.in_progress == 4, "four messages held", timeout_s=10)
        process.send_signal(signal.SIGTERM)
        await until(
            lambda: _is(state_of(redis_client, "sub-1"), ConsumerState.DRAINING), "draining"
        )
        process.send_signal(signal.SIGTERM)
        assert await _exit_code(process, log) == 0, log.read_text()
    assert sorted(await redis_client.lrange(Q, 0, -1)) == sorted(messages)
    assert await held(redis_client, "sub-1") == [] and proc.accepted == []


def build_parser() -> argparse.ArgumentParser:
    """Only the consume subcommand: these tests need no other room of the CLI."""
    parser = argparse.ArgumentParser(prog="autoscaler")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def test_rate_becomes_whole_tasks_per_period() -> None:
    assert make_throttler(None) is None
    for rate, limit, period in ((2.5, 2, 0.8), (0.5, 1, 2.0), (100, 100, 1.0)):
        throttler = make_throttler(rate)
        assert throttler is not None
        assert (throttler.rate_limit, throttler.period) == pytest.approx((limit, period))


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--forward", "http://x/p"], "--queue"),
        (["--queue", "q", "--forward", "ftp://x"], "--forward"),
        (["--queue", "q", "--forward", "http://x/p", "--concurrency", "0"], "--concurrency"),
        (["--queue", "q", "--forward", "http://x/p", "--rate", "fast"], "--rate"),
        (["--queue", "q", "--forward", "http://x/p", "--drain-timeout", "-1"], "--drain-timeout"),
        (["--queue", "q", "--forward", "http://x/p", "--metrics-port", "70000"], "--metrics-port"),
        (["--queue", "q", "--forward", "http://x/p", "--id", "bad id"], "--id"),
        (["--queue", "q", "--forward", "http://x/p", "--redis-url", "http://r"], "--redis-url"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(
    flags: list[str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["consume", *flags])
    assert exited.value.code == 2
    assert named in capsys.readouterr().err


def test_flags_become_settings() -> None:
    args = build_parser().parse_args(
        ["consume", "--queue", "q", "--forward", "http://127.0.0.1:8080/p", "--rate", "2.5",
         "--heartbeat-interval", "0.5", "--dead-letter", "q:failed"]
    )  # fmt: skip
    settings = settings_from_args(args, {"POD_NAME": "worker-7f9c-abcde"})
    assert (settings.consumer_id, settings.pod_name, settings.rate_per_s) == (
        "worker-7f9c-abcde", "worker-7f9c-abcde", 2.5,
    )  # fmt: skip
    assert (settings.lease_ms, settings.take_timeout_s, settings.keys.dead) == (
        1500,
        0.5,
        "q:failed",
    )
    with pytest.raises(InputError, match="--id"):
        settings_from_args(args, {"POD_NAME": "bad name"})


def test_credentials_never_reach_a_log_line() -> None:
    assert redact_url("redis://user:s3cret@redis:6379/0") == "redis://user:***@redis:6379/0"
    assert redact_url("redis://redis:6379/0") == "redis://redis:6379/0"


def test_log_lines_name_queue_and_consumer() -> None:
    record_log = ConsumerLog(logging.getLogger("t"), "jobs", "c1")
    msg, kwargs = record_log.process("state %s", {})
    record = logging.getLogger("t").makeRecord(  # as the adapter's logger builds it
        "t", logging.INFO, __file__, 1, msg, ("drained",), None, extra=kwargs["extra"]
    )
    assert TextFormatter().format(record).endswith("state drained queue=jobs consumer=c1")
    assert '"consumer": "c1"' in JsonFormatter().format(record)
    assert '"event": "state drained"' in JsonFormatter().format(record)


def test_parser_namespace_has_every_setting() -> None:
    args = build_parser().parse_args(["consume", "--queue", "q", "--forward", "http://h/p"])
    assert isinstance(args, argparse.Namespace) and args.concurrency == 1
    assert (args.max_deliveries, args.request_timeout, args.drain_timeout) == (5, 30.0, 120.0)


@given(st.integers(100, 599), st.text(max_size=600))
def test_classify_statuses(status: int, body: str) -> None:
    result = classify(status, body)
    if 200 <= status < 300:
        assert result.answer is Answer.OK
    elif 400 <= status < 500 and status not in (408, 429):
        assert result.answer is Answer.REJECT and result.reason.startswith(f"HTTP {status}")
    elif status in (502, 503):
        assert result.answer is Answer.UNAVAILABLE
    else:
        assert result.answer is Answer.RETRY
    assert len(result.reason) < 400  # the body is truncated before it is stored or logged


@given(st.one_of(st.text(max_size=20), st.floats().map(str)))
def test_durations_are_finite_non_negative_or_an_argparse_error(text: str) -> None:
    try:
        value = non_negative_float(text)
    except argparse.ArgumentTypeError:
        return
    assert 0 <= value < float("inf")
