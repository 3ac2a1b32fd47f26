"""``autoscaler dead-letter --stream``: list, show, replay, purge a dead-letter stream."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from autoscaler.cli import main
from autoscaler.redisqueue import streams

S, G = "events", "workers"
DEAD = f"{S}:dead"


@pytest.fixture
def ids(redis_url: str) -> Iterator[list[str]]:
    """Three entries (one with two fields) dead-lettered by the consumer's own script."""
    r = redis.Redis.from_url(redis_url)
    r.xgroup_create(S, G, id="0", mkstream=True)
    # Explicit ids far in the past: the dead stream's own ids (now) can never equal them,
    # so an id names one entry (both kinds are accepted by the CLI).
    added = [r.xadd(S, {"body": "m0"}, id="1-1"), r.xadd(S, {"body": "m1"}, id="1-2"),
             r.xadd(S, {"a": "1", "b": "2"}, id="1-3")]  # fmt: skip
    r.xreadgroup(G, "c1", {S: ">"}, count=3)
    for n, entry_id in enumerate(added):
        args = [G, "c1", entry_id, "reject", 1, 5, f"HTTP 400 #{n}"]
        assert r.eval(streams.SETTLE.source, 2, S, DEAD, *args) == [b"dead", 1]
    yield [i.decode() if isinstance(i, bytes) else i for i in added]
    r.close()


def run(capsys: pytest.CaptureFixture[str], redis_url: str, *args: str) -> tuple[int, str]:
    code = main(["dead-letter", args[0], "--redis-url", redis_url, "--stream", S, *args[1:]])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_list_and_show_name_entry_ids_reasons_and_bodies(
    ids: list[str], redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(capsys, redis_url, "list", "--json")
    listed = json.loads(out)
    assert code == 0 and listed["total"] == 3 and listed["dead_letter"] == DEAD
    newest = listed["entries"][0]
    assert (newest["id"], newest["reason"], newest["deliveries"]) == (ids[2], "HTTP 400 #2", 1)
    assert json.loads(newest["preview"]) == {"a": "1", "b": "2"}  # several fields: JSON
    code, out = run(capsys, redis_url, "show", ids[0], "--json")
    shown = json.loads(out)
    assert code == 0 and shown["body"] == "m0" and shown["reason"] == "HTTP 400 #0"


def test_replay_adds_the_original_fields_back_once(
    ids: list[str], redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    r = redis.Redis.from_url(redis_url)
    try:
        code, out = run(capsys, redis_url, "replay", ids[1], "--json")
        assert code == 0 and json.loads(out)["replayed"] == 1
        newest: Any = r.xrevrange(S, count=1)
        last_id, fields = newest[0]
        assert fields == {b"body": b"m1"} and last_id.decode() not in ids
        code, out = run(capsys, redis_url, "replay", ids[1])
        assert code == 2 and "no dead letter" in out  # gone from the dead stream: not twice
        code, out = run(capsys, redis_url, "purge", "--all", "--yes", "--json")
        assert code == 0 and json.loads(out) == {"purged": 2, "dead_letter": DEAD, "left": 0}
    finally:
        r.close()
