"""``autoscaler dead-letter``: list, show, replay, purge, against a real redis-server."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis
import redis.asyncio as aioredis

from autoscaler import keys
from autoscaler.cli import main
from autoscaler.redisqueue import scripts

Q = "jobs"
DEAD = keys.dead_letter_key(Q)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(redis_url)
    # Dead-lettered oldest first: m0 … m4 (index 0, the newest, is m4).
    for i in range(5):
        m = f"m{i}".encode()
        r.lpush(DEAD, m)
        r.hset(keys.dead_reasons_key(Q), keys.message_digest(m), f"HTTP 500 #{i}")
        r.hset(keys.dead_meta_for(DEAD), keys.message_digest(m), f"{1700000000 + i} 5")
    yield r
    r.close()


def run(capsys: pytest.CaptureFixture[str], redis_url: str, *args: str) -> tuple[int, str]:
    code = main(["dead-letter", args[0], "--redis-url", redis_url, "--queue", Q, *args[1:]])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_list_shows_reasons_deliveries_and_age(
    client: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, redis_url, "list", "--json")
    listed = json.loads(out)
    assert code == 0 and listed["total"] == 5
    first = listed["entries"][0]
    assert (first["index"], first["preview"], first["reason"], first["deliveries"]) == (
        0, "m4", "HTTP 500 #4", 5,
    )  # fmt: skip
    assert first["age_s"] > 0
    code, text = run(capsys, redis_url, "list", "--limit", "2")
    assert code == 0 and "5 dead letters" in text and text.count("HTTP 500") == 2


def test_show_by_index_and_by_digest(
    client: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, redis_url, "show", "4", "--json")
    assert code == 0 and json.loads(out)["body"] == "m0"
    digest = keys.message_digest(b"m2")[:8]
    code, out = run(capsys, redis_url, "show", digest, "--json")
    assert code == 0 and json.loads(out)["body"] == "m2"


def test_replay_one_the_oldest_or_all_to_head_or_tail(
    client: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    client.lpush(Q, b"waiting")
    assert run(capsys, redis_url, "replay", "0")[0] == 0  # m4 to the head (taken next)
    assert client.lrange(Q, 0, -1) == [b"waiting", b"m4"]
    assert run(capsys, redis_url, "replay", "--count", "2", "--to", "tail")[0] == 0
    assert client.lrange(Q, 0, -1) == [b"m1", b"m0", b"waiting", b"m4"]  # m0 first of them
    assert client.lrange(DEAD, 0, -1) == [b"m3", b"m2"]
    assert run(capsys, redis_url, "replay", "--all")[0] == 0
    assert client.lrange(Q, 0, -1)[-2:] == [b"m3", b"m2"]  # m2, the older, taken first
    assert client.llen(DEAD) == 0 and client.hlen(keys.dead_reasons_key(Q)) == 0


def test_purge_needs_yes(
    client: redis.Redis, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, redis_url, "purge", "--all")
    assert code == 2 and "--yes" in out and client.llen(DEAD) == 5
    assert run(capsys, redis_url, "purge", "--count", "2", "--yes")[0] == 0
    assert client.lrange(DEAD, 0, -1) == [b"m4", b"m3", b"m2"]
    assert client.hlen(keys.dead_meta_for(DEAD)) == 3


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["show", "9"], "ID 9"),
        (["show", "zz"], "ID 'zz'"),
        (["replay", "abcdef"], "ID abcdef"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    client: redis.Redis,
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    named: str,
) -> None:
    code, out = run(capsys, redis_url, *args)
    assert code == 2 and named in out and len(out.strip().splitlines()) == 1
    assert "Traceback" not in out


@pytest.mark.parametrize("operation", ["replay", "purge"])
async def test_a_run_retried_after_a_lost_reply_changes_nothing_more(
    client: redis.Redis, redis_url: str, operation: str
) -> None:
    """redis-py retries a script once on a connection error: the retry carries the same op
    key, so it must answer the first run's count instead of taking the next entries."""
    op = keys.dead_op_for(DEAD, "t-1")
    span = [DEAD, keys.dead_reasons_for(DEAD), keys.dead_meta_for(DEAD), op]
    r = aioredis.Redis.from_url(redis_url)
    try:
        for _ in range(2):  # the first run, then its retry
            if operation == "replay":
                moved = await scripts.REPLAY(r, [*span, Q], [0, 2, "tail"])
            else:
                moved = await scripts.PURGE(r, span, [0, 2])
            assert moved == 2
    finally:
        await r.aclose()
    assert client.lrange(DEAD, 0, -1) == [b"m2", b"m1", b"m0"]  # only m4 and m3 left it
    assert client.lrange(Q, 0, -1) == ([b"m4", b"m3"] if operation == "replay" else [])
