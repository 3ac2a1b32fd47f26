"""The stream trigger: annotations, the source's read (lag, pending, NULL lag) and activation,
against a real redis-server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import yaml
from hypothesis import given
from hypothesis import strategies as st

from autoscaler import keys
from autoscaler.annotations import effective_values, parse_spec, reference_table
from autoscaler.cli import main
from autoscaler.errors import InvalidSpecError, TransientSourceError
from autoscaler.policy import PolicyState, Reason, decide
from autoscaler.policy.spec import STREAM_LOADS, RedisStreamTrigger, RedisTrigger
from autoscaler.policy.state import Reading
from autoscaler.redisconn import RedisCredentials, make_client
from autoscaler.sources import SourcePool
from autoscaler.sources.redis import RedisSource
from autoscaler.sources.redisstream import CHUNK_PAIRS, LAG_SCAN, parse_reply
from autoscaler.sources.redisstream import readings_for as stream_readings
from tests.servers import RedisServer
from tests.test_sources_redis import CountingConnection

P = "queue-autoscaler.io/"


def stream_spec(**extra: str) -> dict[str, str]:
    return {
        P + "redis-stream": "events",
        P + "redis-consumer-group": "workers",
        P + "messages-per-replica": "10",
        **{P + k.replace("_", "-"): v for k, v in extra.items()},
    }


# --- annotations -------------------------------------------------------------------------


def test_stream_annotations_make_a_stream_trigger() -> None:
    spec = parse_spec(stream_spec(redis_stream_load="lag", activation_messages="0"))
    (trigger,) = spec.triggers
    assert trigger == RedisStreamTrigger(("events",), "workers", 10.0, None, 0.0, "lag")
    assert spec.queue_triggers == (trigger,) and spec.redis_triggers == ()
    values = effective_values(spec)
    assert values["redis-stream"] == "events" and values["redis-consumer-group"] == "workers"
    assert values["redis-stream-load"] == "lag" and values["messages-per-replica"] == "10"
    assert values["redis-list"] is None and values["count-in-flight"] is None
    assert parse_spec({P + k: v for k, v in values.items() if v is not None}) == spec


def test_default_load_is_lag_plus_pending_and_lists_and_streams_combine() -> None:
    spec = parse_spec({**stream_spec(), P + "redis-list": "jobs"})
    lists, streams = spec.redis_triggers, spec.stream_triggers
    assert lists == (RedisTrigger(("jobs",), 10.0),)
    assert streams[0].load == "lag+pending" and streams[0].messages_per_replica == 10.0


@pytest.mark.parametrize(
    ("annotations", "key", "says"),
    [
        ({P + "redis-stream": "e", P + "messages-per-replica": "1"},
         "redis-consumer-group", "required with redis-stream"),
        ({P + "redis-consumer-group": "g"}, "redis-stream", "needed by redis-consumer-group"),
        ({P + "messages-per-replica": "3"}, "redis-list", "or redis-stream"),
        (stream_spec(redis_stream_load="backlog"), "redis-stream-load", "one of lag+pending"),
        (stream_spec(redis_consumer_group="a b"), "redis-consumer-group", "without spaces"),
        ({**stream_spec(), P + "redis-stream": "a,a"}, "redis-stream", "distinct stream"),
        ({**stream_spec(), P + "count-in-flight": "false"}, "redis-list", "needed by count"),
    ],
)  # fmt: skip
def test_bad_stream_annotations_name_the_key(
    annotations: dict[str, str], key: str, says: str
) -> None:
    with pytest.raises(InvalidSpecError) as e:
        parse_spec(annotations)
    assert P + key in str(e.value) and says in str(e.value)


@given(st.text(max_size=30))
def test_any_load_text_parses_or_names_the_key(text: str) -> None:
    try:
        spec = parse_spec(stream_spec(redis_stream_load=text))
    except InvalidSpecError as e:
        assert P + "redis-stream-load" in str(e)
    else:
        assert spec.stream_triggers[0].load in STREAM_LOADS


def test_reference_table_documents_the_stream_keys() -> None:
    table = reference_table()
    for key in ("redis-stream", "redis-consumer-group", "redis-stream-load"):
        assert f"| `{key}` |" in table
    assert "required with `redis-list` or `redis-stream`" in table


# --- the source ---------------------------------------------------------------------------


async def add(client: aioredis.Redis, stream: str, n: int) -> list[bytes]:
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(stream, {"body": f"m{i}"})
    ids: list[bytes] = await pipe.execute()
    return ids


async def deliver(client: aioredis.Redis, stream: str, group: str, n: int) -> list[bytes]:
    reply: Any = await client.xreadgroup(group, "c1", {stream: ">"}, count=n)
    return [entry_id for entry_id, _ in reply[0][1]] if reply else []


async def read(url: str, *triggers: RedisTrigger | RedisStreamTrigger) -> list[Reading]:
    source = RedisSource(url)
    try:
        return await source.read(list(triggers))
    finally:
        await source.aclose()


def trigger(load: str = "lag+pending", *streams: str) -> RedisStreamTrigger:
    return RedisStreamTrigger(streams or ("events",), "workers", 10, load=load)


async def test_lag_pending_length_and_their_sum(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    await add(redis_client, "events", 10)
    await redis_client.xgroup_create("events", "workers", id="0")
    taken = await deliver(redis_client, "events", "workers", 4)
    await redis_client.xack("events", "workers", taken[0])
    await redis_client.set(keys.processed_key("events"), 1)
    await redis_client.sadd(keys.consumers_key("events"), "c1", "c2")
    await redis_client.set(keys.lease_key("c1"), "t", px=10_000)
    both, lag, pending, length = await read(
        redis_url, trigger(), trigger("lag"), trigger("pending"), trigger("length")
    )
    assert both == Reading(9, backlog=6, in_flight=3, processed_total=1, consumers=1)
    assert (lag.value, pending.value, length.value) == (6, 3, 10)


async def test_missing_stream_is_idle_and_missing_group_lags_by_the_whole_stream(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    await add(redis_client, "fresh", 7)
    missing, no_group = await read(redis_url, trigger(), trigger("lag+pending", "fresh"))
    assert missing.value == 0 and missing.error is None
    assert (no_group.value, no_group.backlog, no_group.in_flight) == (7, 7, 0)


@pytest.mark.parametrize("how", ["xdel-after", "xtrim-before-delivered"])
async def test_null_lag_is_counted_from_the_entries(
    redis_url: str, redis_client: aioredis.Redis, how: str
) -> None:
    ids = await add(redis_client, "events", 20)
    await redis_client.xgroup_create("events", "workers", id="0")
    await deliver(redis_client, "events", "workers", 5)
    if how == "xdel-after":  # a deleted undelivered entry: 14 remain after the 5 delivered
        await redis_client.xdel("events", ids[10])
        expected_lag = 14
    else:  # the group was created at an arbitrary id after a trim: Redis cannot tell
        await redis_client.xtrim("events", maxlen=12, approximate=False)
        await redis_client.xgroup_create("events", "late", id=ids[9])
        await redis_client.xdel("events", ids[15])
        expected_lag = 9  # entries 10..19 less the deleted one
    group = "workers" if how == "xdel-after" else "late"
    infos = {g["name"].decode(): g for g in await redis_client.xinfo_groups("events")}
    assert infos[group]["lag"] is None  # Redis itself reports NULL
    (reading,) = await read(redis_url, RedisStreamTrigger(("events",), group, 10, load="lag"))
    assert reading.value == expected_lag and reading.error is None


async def test_null_lag_past_the_scan_on_both_sides_is_unknown_not_zero(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    ids = await add(redis_client, "events", 2 * LAG_SCAN + 300)
    await redis_client.xgroup_create("events", "workers", id="0")
    await deliver(redis_client, "events", "workers", LAG_SCAN + 100)
    await redis_client.xdel("events", ids[-10])
    lag, pending, length = await read(redis_url, trigger("lag"), trigger("pending"),
                                      trigger("length"))  # fmt: skip
    assert lag.value is None and lag.error is not None and "unknown" in lag.error
    assert pending.value == LAG_SCAN + 100 and length.value == 2 * LAG_SCAN + 299


async def test_lists_and_streams_in_one_round_trip(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    await redis_client.rpush("jobs", "a", "b")
    await add(redis_client, "events", 3)
    client = make_client(
        redis_url, RedisCredentials.from_env({}), connection_class=CountingConnection
    )
    source = RedisSource(redis_url, client=client)
    triggers: list[RedisTrigger | RedisStreamTrigger] = [
        RedisTrigger(("jobs",), 1),
        trigger(),
        RedisTrigger(("jobs",), 1, count_in_flight=False),
    ]
    try:
        await source.read(triggers)  # warm-up: connects and loads the scripts
        sent = CountingConnection.sent
        listed, streamed, uncounted = await source.read(triggers)
        assert CountingConnection.sent - sent == 1
    finally:
        await source.aclose()
    assert (listed.value, streamed.value, uncounted.value) == (2, 3, 2)


async def test_a_wrong_type_fails_only_its_trigger(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    await redis_client.set("events", "not a stream")
    await add(redis_client, "other", 2)
    bad, good = await read(redis_url, trigger(), trigger("lag+pending", "other"))
    assert bad.value is None and "WRONGTYPE" in (bad.error or "")
    assert good.value == 2


async def test_the_pool_routes_stream_triggers_to_the_redis_server(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    await add(redis_client, "events", 4)
    pool = SourcePool(redis_url=redis_url)
    try:
        (reading,) = await pool.read([trigger()])
    finally:
        await pool.aclose()
    assert reading.value == 4


# --- the policy on stream readings ----------------------------------------------------------


def test_activation_zero_leaves_zero_on_one_entry_and_stays_at_zero_on_none_only() -> None:
    spec = parse_spec(stream_spec(activation_messages="0", min_replicas="0"))
    idle, _ = decide(spec, 0, [Reading(0, backlog=0, in_flight=0)], PolicyState(), now=0.0)
    one, _ = decide(spec, 0, [Reading(1, backlog=1, in_flight=0)], PolicyState(), now=0.0)
    unknown, _ = decide(spec, 0, [Reading.failed("lag unknown")], PolicyState(), now=0.0)
    assert (idle.replicas, idle.reason) == (0, Reason.INACTIVE)
    assert (one.replicas, one.reason) == (1, Reason.ACTIVATED)
    assert unknown.replicas == 1  # an unknown lag is never read as an idle stream


async def test_scales_on_lag_plus_pending(redis_url: str, redis_client: aioredis.Redis) -> None:
    """45 undelivered + 30 pending at 10 per replica: 8 replicas; lag alone would say 5."""
    await add(redis_client, "events", 75)
    await redis_client.xgroup_create("events", "workers", id="0")
    await deliver(redis_client, "events", "workers", 30)
    spec = parse_spec(stream_spec(max_replicas="20", scale_up_max_pods="20"))
    lag_spec = parse_spec(stream_spec(max_replicas="20", scale_up_max_pods="20",
                                      redis_stream_load="lag"))  # fmt: skip
    both, lag = await read(redis_url, *spec.stream_triggers, *lag_spec.stream_triggers)
    decision, _ = decide(spec, 1, [both], PolicyState(), now=0.0)
    lag_decision, _ = decide(lag_spec, 1, [lag], PolicyState(), now=0.0)
    assert (decision.replicas, decision.reason) == (8, Reason.SCALE_UP)
    assert lag_decision.replicas == 5


# --- autoscaler check ------------------------------------------------------------------------


def test_check_validates_the_stream_keys_offline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def manifest(annotations: dict[str, str]) -> str:
        path = tmp_path / "w.yaml"
        metadata = {"name": "w", "namespace": "apps", "annotations": annotations,
                    "labels": {P + "enabled": "true"}}  # fmt: skip
        path.write_text(yaml.safe_dump({"apiVersion": "apps/v1", "kind": "Deployment",
                                        "metadata": metadata}))  # fmt: skip
        return str(path)

    assert main(["check", manifest(stream_spec(redis_stream_load="lag"))]) == 0
    assert "redis-consumer-group" in capsys.readouterr().out
    assert main(["check", manifest(stream_spec(redis_stream_load="newest"))]) == 1
    out = capsys.readouterr().out
    assert f"{P}redis-stream-load: 'newest': expected one of lag+pending" in out
    no_group = stream_spec()
    del no_group[P + "redis-consumer-group"]
    assert main(["check", manifest(no_group)]) == 1
    out = capsys.readouterr().out
    assert f"{P}redis-consumer-group" in out and "required with redis-stream" in out


async def test_scripting_refused_fails_only_the_stream_triggers(own_redis: RedisServer) -> None:
    """An ACL user without scripting: lists are still read (by pipeline), every stream
    trigger fails naming the refusal, never reads as 0."""
    admin = aioredis.Redis.from_url(own_redis.url)
    await admin.acl_setuser("scaler", enabled=True, passwords=["+s3cret"], keys=["*"],
                            channels=["*"], commands=["+@all", "-@scripting"])  # fmt: skip
    await admin.rpush("jobs", "a", "b", "c")
    await add(admin, "events", 2)
    env = {"REDIS_USERNAME": "scaler", "REDIS_PASSWORD": "s3cret"}
    source = RedisSource(own_redis.url, credentials=RedisCredentials.from_env(env))
    try:
        for _ in range(2):  # the first read learns the refusal, the second remembers it
            listed, streamed = await source.read([RedisTrigger(("jobs",), 1), trigger()])
            assert listed.value == 3 and source.mode == "pipeline"
            assert streamed.value is None and "stream read" in (streamed.error or "")
    finally:
        await source.aclose()
        await admin.aclose()


@given(
    st.lists(
        st.one_of(st.integers(-3, 10**6), st.binary(max_size=6), st.none(), st.just(b"unknown")),
        max_size=12,
    ),
    st.sampled_from(STREAM_LOADS),
)
def test_any_stream_reply_gives_readings_or_a_server_error(reply: list[Any], load: str) -> None:
    """Whatever the script answers: a whole-server error for a wrong shape, else one reading
    per trigger that is a non-negative number or unknown with an error — never −1."""
    pairs = [("a", "workers"), ("b", "workers")]
    try:
        results = parse_reply(pairs, reply)
    except TransientSourceError:
        assert len(reply) != 10
        return
    (reading,) = stream_readings("server", [trigger(load, "a", "b")], results)
    assert (reading.value is None and reading.error) or (reading.value or 0) >= 0


async def test_many_streams_are_read_in_chunked_calls_of_one_round_trip(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    """More pairs than ``CHUNK_PAIRS``: several script calls (a call blocks the server),
    still one round trip, each trigger its own value."""
    n = 2 * CHUNK_PAIRS + 10
    pipe = redis_client.pipeline(transaction=False)
    for i in range(n):
        for _ in range(i % 4):
            pipe.xadd(f"s{i}", {"body": "m"})
    await pipe.execute()
    client = make_client(
        redis_url, RedisCredentials.from_env({}), connection_class=CountingConnection
    )
    source = RedisSource(redis_url, client=client)
    triggers = [RedisStreamTrigger((f"s{i}",), "workers", 1) for i in range(n)]
    try:
        await source.read(triggers)  # warm-up
        await redis_client.config_resetstat()
        sent = CountingConnection.sent
        readings = await source.read(triggers)
        assert CountingConnection.sent - sent == 1
    finally:
        await source.aclose()
    assert [r.value for r in readings] == [float(i % 4) for i in range(n)]
    stats = await redis_client.info("commandstats")
    assert stats["cmdstat_evalsha"]["calls"] == 3
