"""The reliable-queue and registry operations, against a real redis-server."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis.asyncio as aioredis
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from autoscaler import keys, redisqueue
from autoscaler.errors import QueueError, TransientQueueError
from autoscaler.keys import Command, ConsumerField, ConsumerState
from autoscaler.redisqueue import scripts
from tests.servers import free_port

Q = "jobs"
CK = redisqueue.ConsumerKeys(Q, "c1")


async def _taken(
    r: aioredis.Redis, ck: redisqueue.ConsumerKeys, n: int
) -> list[redisqueue.Delivery]:
    out = []
    for _ in range(n):
        d = await redisqueue.take(r, ck, 0.05)
        assert d is not None
        out.append(d)
    return out


async def test_take_counts_deliveries_under_the_python_digest(redis_client: aioredis.Redis) -> None:
    await redis_client.lpush(Q, b"a", b"b")
    fast = await redisqueue.take(redis_client, CK, 0.05)
    assert fast == redisqueue.Delivery(b"a", 1)  # the right end is the head
    assert await redis_client.hget(keys.deliveries_key(Q), keys.message_digest(b"a")) == b"1"
    await redis_client.lpush(Q, b"b")  # b twice: the second take counts 2
    assert await _taken(redis_client, CK, 2) == [
        redisqueue.Delivery(b"b", 1),
        redisqueue.Delivery(b"b", 2),
    ]
    assert await redisqueue.take(redis_client, CK, 0.05) is None  # empty: BLMOVE times out


async def test_blocking_take_wakes_on_push(redis_client: aioredis.Redis) -> None:
    async def push_later() -> None:
        await asyncio.sleep(0.1)
        await redis_client.lpush(Q, b"late")

    pusher = asyncio.create_task(push_later())
    got = await redisqueue.take(redis_client, CK, 2)
    await pusher
    assert got == redisqueue.Delivery(b"late", 1)
    assert await redis_client.lrange(CK.processing, 0, -1) == [b"late"]


async def test_ack_removes_counts_and_can_take_the_next(redis_client: aioredis.Redis) -> None:
    await redis_client.lpush(Q, b"a", b"b")
    (first,) = await _taken(redis_client, CK, 1)
    held, following = await redisqueue.ack(redis_client, CK, first.message, take_next=True)
    assert held and following == redisqueue.Delivery(b"b", 1)
    assert await redis_client.lrange(CK.processing, 0, -1) == [b"b"]
    assert await redisqueue.ack(redis_client, CK, b"b", take_next=True) == (True, None)
    assert await redis_client.get(keys.processed_key(Q)) == b"2"
    assert await redis_client.hlen(keys.deliveries_key(Q)) == 0


async def test_ack_of_a_reaped_message_is_not_counted(redis_client: aioredis.Redis) -> None:
    await redis_client.lpush(Q, b"a")
    await _taken(redis_client, CK, 1)
    await redisqueue.requeue(redis_client, CK, max_deliveries=5, reason="r")  # no lease: reaped
    assert await redisqueue.ack(redis_client, CK, b"a") == (False, None)
    assert await redis_client.get(keys.processed_key(Q)) is None
    assert await redis_client.lrange(CK.quarantine, 0, -1) == [b"a"]  # held alone: a suspect


async def test_fail_retries_below_max_then_dead_letters(redis_client: aioredis.Redis) -> None:
    await redis_client.lpush(Q, b"m")
    await _taken(redis_client, CK, 1)
    assert (
        await redisqueue.fail(redis_client, CK, b"m", "HTTP 500", max_deliveries=2)
        is redisqueue.Verdict.RETRY
    )
    assert await redisqueue.redeliver(redis_client, CK, b"m") == 2
    assert (
        await redisqueue.fail(redis_client, CK, b"m", "HTTP 500", max_deliveries=2)
        is redisqueue.Verdict.DEAD
    )
    assert await redis_client.lrange(keys.dead_letter_key(Q), 0, -1) == [b"m"]
    reasons = await redis_client.hgetall(keys.dead_reasons_key(Q))
    assert reasons == {keys.message_digest(b"m").encode(): b"HTTP 500"}
    assert await redis_client.llen(CK.processing) == 0
    assert await redis_client.hlen(keys.deliveries_key(Q)) == 0
    assert (
        await redisqueue.fail(redis_client, CK, b"m", "x", max_deliveries=2)
        is redisqueue.Verdict.GONE
    )
    assert await redisqueue.redeliver(redis_client, CK, b"m") == 0


async def test_dead_letter_at_once_to_a_custom_list(redis_client: aioredis.Redis) -> None:
    ck = redisqueue.ConsumerKeys(Q, "c1", dead_letter="failed")
    await redis_client.lpush(Q, b"bad")
    await _taken(redis_client, ck, 1)
    assert await redisqueue.dead_letter(redis_client, ck, b"bad", "HTTP 400: nope")
    assert await redis_client.lrange("failed", 0, -1) == [b"bad"]
    assert await redis_client.hvals("failed:reasons") == [b"HTTP 400: nope"]
    assert not await redisqueue.dead_letter(redis_client, ck, b"bad", "again")  # not held any more


async def test_push_back_returns_held_messages_to_the_head(redis_client: aioredis.Redis) -> None:
    await redis_client.lpush(Q, b"a", b"b", b"c")
    await _taken(redis_client, CK, 1)
    assert await redisqueue.push_back(redis_client, CK, b"a", b"not-held") == 1
    assert await redisqueue.push_back(redis_client, CK) == 0
    assert [d.message for d in await _taken(redis_client, CK, 3)] == [b"a", b"b", b"c"]


async def test_requeue_keeps_order_and_respects_a_live_lease(redis_client: aioredis.Redis) -> None:
    await redis_client.lpush(Q, b"a", b"b", b"c", b"d")
    await _taken(redis_client, CK, 3)
    await redis_client.set(keys.lease_key("c1"), "token", px=10_000)
    alive = await redisqueue.requeue(redis_client, CK, max_deliveries=5, reason="r")
    assert alive == redisqueue.Requeued(0, 0, skipped_alive=True)
    assert await redis_client.llen(CK.processing) == 3
    forced = await redisqueue.requeue(redis_client, CK, max_deliveries=0, reason="", force=True)
    assert forced == redisqueue.Requeued(3, 0)
    assert await redis_client.lrange(Q, 0, -1) == [b"d", b"c", b"b", b"a"]  # as it was


async def test_poison_message_is_dead_lettered_after_n_crashes(
    redis_client: aioredis.Redis,
) -> None:
    await redis_client.lpush(Q, b"poison")
    for _ in range(3):  # taken, the consumer dies, the reaper returns it
        await _taken(redis_client, CK, 1)
        result = await redisqueue.requeue(
            redis_client, CK, max_deliveries=3, reason="crashed 3 times"
        )
    assert result == redisqueue.Requeued(0, 1)
    assert await redis_client.llen(Q) == 0
    assert await redis_client.lrange(keys.dead_letter_key(Q), 0, -1) == [b"poison"]
    assert await redis_client.hvals(keys.dead_reasons_key(Q)) == [b"crashed 3 times"]


async def test_two_reapers_requeue_each_message_once(redis_url: str) -> None:
    clients = [aioredis.Redis.from_url(redis_url) for _ in range(2)]
    try:
        messages = [f"m{i}".encode() for i in range(200)]
        await clients[0].lpush(Q, *messages)
        await _taken(clients[0], CK, 150)
        results = await asyncio.gather(
            *(redisqueue.requeue(c, CK, max_deliveries=5, reason="r", forget=True) for c in clients)
        )
        assert sorted(r.quarantined for r in results) == [0, 150]
        back = await clients[0].lrange(Q, 0, -1) + await clients[0].lrange(CK.quarantine, 0, -1)
        assert sorted(back) == sorted(messages)
        assert await clients[0].exists(CK.processing) == 0
    finally:
        for c in clients:
            await c.aclose()


async def test_a_retried_ack_returns_what_the_first_run_took(redis_client: aioredis.Redis) -> None:
    await redis_client.lpush(Q, b"a", b"b", b"c")
    (first,) = await _taken(redis_client, CK, 1)
    step = redisqueue.Step("0", "t-1")
    once = await redisqueue.ack(redis_client, CK, first.message, take_next=True, step=step)
    again = await redisqueue.ack(
        redis_client, CK, first.message, take_next=True, step=step
    )  # lost reply
    assert once == again == (True, redisqueue.Delivery(b"b", 1))
    assert await redis_client.lrange(CK.processing, 0, -1) == [b"b"]  # c not taken
    assert await redis_client.get(keys.processed_key(Q)) == b"1"
    assert await redisqueue.take_now(
        redis_client, CK, redisqueue.Step("0", "t-2")
    ) == redisqueue.Delivery(b"c", 1)
    assert await redisqueue.take_now(
        redis_client, CK, redisqueue.Step("0", "t-2")
    ) == redisqueue.Delivery(b"c", 1)
    assert await redis_client.llen(Q) == 0


async def test_a_crash_beside_others_quarantines_all_uncharged(
    redis_client: aioredis.Redis,
) -> None:
    await redis_client.lpush(Q, b"a", b"b", b"c", b"d")
    await _taken(redis_client, CK, 3)
    result = await redisqueue.requeue(redis_client, CK, max_deliveries=1, reason="crashed")
    assert result == redisqueue.Requeued(0, 0, quarantined=3)  # at max, but nobody knows who did it
    assert await redis_client.lrange(CK.quarantine, 0, -1) == [b"c", b"b", b"a"]
    assert await redis_client.hvals(keys.deliveries_key(Q)) == [b"0"] * 3
    other = redisqueue.ConsumerKeys(Q, "c2")
    assert await redisqueue.take_now(redis_client, other) == redisqueue.Delivery(
        b"a", 1
    )  # a suspect, alone
    assert await redisqueue.take(redis_client, other, 0.05) is None  # takes nothing beside it
    assert await redisqueue.ack(redis_client, other, b"a", take_next=True) == (
        True,
        redisqueue.Delivery(b"b", 1),
    )
    busy = redisqueue.ConsumerKeys(Q, "c3")
    await redis_client.lpush(Q, b"e")
    assert await redisqueue.take_now(redis_client, busy) == redisqueue.Delivery(b"c", 1)
    assert await redisqueue.take_now(redis_client, other) is None  # c2 holds b alone
    await redisqueue.requeue(redis_client, other, max_deliveries=1, reason="crashed alone")
    assert await redis_client.lrange(keys.dead_letter_key(Q), 0, -1) == [b"b"]  # convicted


async def test_a_blocking_take_beside_a_suspect_is_given_back(
    redis_client: aioredis.Redis,
) -> None:
    await redis_client.lpush(CK.quarantine, b"suspect")
    taking = asyncio.create_task(redis_client.blmove(Q, CK.processing, 2, "RIGHT", "LEFT"))
    await redis_client.lpush(Q, b"m")
    assert await taking == b"m"
    keys_ = [CK.processing, keys.deliveries_key(Q), CK.quarantine, CK.alone, Q]
    assert await scripts.TAKEN(redis_client, keys_, [b"m"]) == 0
    assert await redis_client.lrange(Q, 0, -1) == [b"m"]
    assert await redis_client.llen(CK.processing) == 0


async def test_push_back_of_orphans_takes_their_delivery_back(
    redis_client: aioredis.Redis,
) -> None:
    await redis_client.lpush(Q, b"a")
    await _taken(redis_client, CK, 1)
    assert await redisqueue.push_back(redis_client, CK, b"a", uncharge=True) == 1
    assert (
        await redisqueue.push_back(redis_client, CK, b"a", uncharge=True) == 0
    )  # a retry: nothing
    assert await redisqueue.take_now(redis_client, CK) == redisqueue.Delivery(b"a", 1)


def _registration(consumer_id: str = "c1", token: str = "t1") -> redisqueue.Registration:
    return redisqueue.Registration(
        redisqueue.ConsumerKeys(Q, consumer_id), "pod-1", token, 5, 1700000000.0
    )


async def test_registry_heartbeat_command_and_lease(redis_client: aioredis.Redis) -> None:
    reg = _registration()
    assert not await redisqueue.set_command(redis_client, "c1", Command.DRAIN)  # not registered
    assert await redisqueue.heartbeat(redis_client, reg, ConsumerState.RUNNING, 2, 150) is None
    assert await redisqueue.set_command(redis_client, "c1", Command.DRAIN)
    assert (
        await redisqueue.heartbeat(redis_client, reg, ConsumerState.DRAINING, 1, 150)
        is Command.DRAIN
    )
    (info,) = await redisqueue.read_registry(redis_client, Q)
    assert info.valid and info.lease_alive
    assert (info.state, info.command, info.in_flight, info.pod) == (
        ConsumerState.DRAINING, Command.DRAIN, 1, "pod-1",
    )  # fmt: skip
    assert (info.dead_letter, info.max_deliveries) == (keys.dead_letter_key(Q), 5)
    deadline = time.monotonic() + 3
    while (await redisqueue.read_registry(redis_client, Q))[0].lease_alive:
        assert time.monotonic() < deadline, "lease never expired"
        await asyncio.sleep(0.02)


async def test_release_lease_only_drops_its_own(redis_client: aioredis.Redis) -> None:
    await redisqueue.heartbeat(
        redis_client, _registration(token="new"), ConsumerState.RUNNING, 0, 10_000
    )
    assert not await redisqueue.release_lease(redis_client, "c1", "old")
    assert await redisqueue.release_lease(redis_client, "c1", "new")
    assert not (await redisqueue.read_registry(redis_client, Q))[0].lease_alive


async def test_redis_errors_are_translated(redis_client: aioredis.Redis) -> None:
    await redis_client.set(Q, "not a list")
    with pytest.raises(QueueError, match="WRONGTYPE") as caught:
        await redisqueue.take(redis_client, CK, 0.05)
    assert not isinstance(caught.value, TransientQueueError)
    no_retry = Retry(NoBackoff(), 0)
    nowhere = aioredis.Redis(port=free_port(), socket_connect_timeout=0.5, retry=no_retry)
    try:
        with pytest.raises(TransientQueueError) as refused:
            await redisqueue.take(nowhere, CK, 0.05)
        assert refused.value.__cause__ is not None
    finally:
        await nowhere.aclose()


def test_parse_consumer_flags_bad_fields() -> None:
    info = redisqueue.parse_consumer(
        "c1", {b"state": b"sleeping", b"in_flight": b"two", b"heartbeat_at": b"nan"}, True
    )
    assert (info.state, info.in_flight, info.heartbeat_at) == (None, None, None)
    assert not info.valid and len(info.problems) == 3
    missing = redisqueue.parse_consumer("c2", {}, False)
    assert not missing.valid and missing.problems == ("state: missing", "in_flight: missing")


_FIELD_NAMES = st.sampled_from([f.value for f in ConsumerField] + ["other"])
_VALUES = st.one_of(
    st.binary(max_size=12),
    st.sampled_from([b"running", b"drain", b"-1", b"3", b"1e308", b"inf", b"\xff"]),
)


@given(st.dictionaries(_FIELD_NAMES.map(str.encode), _VALUES), st.booleans())
def test_parse_consumer_never_raises(fields: dict[bytes, bytes], alive: bool) -> None:
    info = redisqueue.parse_consumer("c", fields, alive)
    assert info.lease_alive is alive
    assert info.in_flight is None or info.in_flight >= 0
    assert info.state is None or isinstance(info.state, ConsumerState)
    assert info.valid == (
        not info.problems and info.state is not None and info.in_flight is not None
    )


@given(st.sampled_from(list(ConsumerState)), st.integers(0, 10_000), st.sampled_from(list(Command)))
def test_parse_consumer_reads_back_what_heartbeat_writes(
    state: ConsumerState, in_flight: int, command: Command
) -> None:
    fields = {"state": state.value, "in_flight": str(in_flight), "command": command.value}
    info = redisqueue.parse_consumer("c", fields, True)
    assert info.valid and (info.state, info.in_flight, info.command) == (state, in_flight, command)
