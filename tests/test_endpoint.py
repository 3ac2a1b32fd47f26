"""The server string (``autoscaler.endpoint``), hash tags, and the new annotations' parsing:
property-based where there is a rule to hold for every input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from autoscaler.annotations import ANNOTATION_PREFIX, effective_values, in_namespace, parse_spec
from autoscaler.endpoint import RedisEndpoint, parse_sentinels
from autoscaler.errors import InvalidSpecError
from autoscaler.keys import (
    consumer_key,
    consumers_key,
    dead_letter_key,
    deliveries_key,
    hash_tag,
    journal_key,
    lease_key,
    processed_key,
    processing_key,
    quarantine_key,
)
from autoscaler.redisconn import RedisCredentials

names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=30)
hosts = st.from_regex(r"[a-z][a-z0-9.-]{0,20}", fullmatch=True)
ports = st.integers(1, 65535)


@given(names)
def test_hash_tag_is_what_redis_hashes(name: str) -> None:
    tag = hash_tag(name)
    if tag is not None:
        assert key_slot(name.encode()) == key_slot(tag.encode())
        assert name.find("{") < name.find(tag) and tag
    else:  # no tag: the whole name is hashed
        start = name.find("{")
        assert start < 0 or name.find("}", start + 1) in (-1, start + 1)


tagged = st.builds(lambda a, t, b: f"{a}{{{t}}}{b}", st.text(alphabet="abc:-", max_size=5),
                   names.filter(lambda t: "}" not in t), names)  # fmt: skip


@given(tagged, st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True))
def test_every_key_of_a_tagged_queue_is_in_its_slot(queue: str, consumer: str) -> None:
    slot = key_slot(queue.encode())
    for key in (
        processing_key(queue, consumer), consumers_key(queue), processed_key(queue),
        deliveries_key(queue), dead_letter_key(queue), quarantine_key(queue),
        journal_key(queue, consumer), consumer_key(consumer, queue), lease_key(consumer, queue),
    ):  # fmt: skip
        assert key_slot(key.encode()) == slot, key


def test_untagged_queues_keep_their_consumer_key_names() -> None:
    """Keys of queues without a tag are the names every earlier release used."""
    assert lease_key("c1", "jobs") == lease_key("c1") == "queue-autoscaler:lease:c1"
    assert consumer_key("c1", "jobs") == "queue-autoscaler:consumer:c1"
    assert lease_key("c1", "jobs:{eu}") == "queue-autoscaler:lease:{eu}:c1"


endpoints = st.builds(
    RedisEndpoint,
    url=st.one_of(st.none(), st.builds(lambda h, p: f"redis://{h}:{p}/0", hosts, ports)),
    cluster=st.booleans(),
    secret=st.one_of(st.none(), st.from_regex(r"[a-z0-9-]{1,10}/[a-z0-9.-]{1,20}", fullmatch=True)),
)
sentinel_endpoints = st.builds(
    RedisEndpoint,
    sentinels=st.lists(st.tuples(hosts, ports), min_size=1, max_size=4, unique=True).map(tuple),
    sentinel_master=st.from_regex(r"[A-Za-z0-9_/.-]{1,20}", fullmatch=True),
    sentinel_tls=st.booleans(),
    secret=st.one_of(st.none(), st.from_regex(r"[a-z0-9-]{1,10}/[a-z0-9-]{1,10}", fullmatch=True)),
)


@given(st.one_of(endpoints, sentinel_endpoints))
def test_fold_then_unfold_gives_the_endpoint_back(endpoint: RedisEndpoint) -> None:
    folded = endpoint.fold()
    if folded is None:
        assert endpoint == RedisEndpoint()
    else:
        assert RedisEndpoint.unfold(folded) == endpoint


def test_a_plain_url_is_its_own_fold() -> None:
    assert RedisEndpoint(url="rediss://h:6380/2").fold() == "rediss://h:6380/2"
    assert (
        RedisEndpoint.unfold("redis://h:1/0?socket_timeout=3").url
        == "redis://h:1/0?socket_timeout=3"
    )


@given(st.lists(st.tuples(hosts, ports), min_size=1, max_size=5, unique=True))
def test_parse_sentinels_reads_what_is_written(pairs: list[tuple[str, int]]) -> None:
    assert parse_sentinels(",".join(f"{h}:{p}" for h, p in pairs)) == tuple(pairs)


@pytest.mark.parametrize("bad", ["", "h", "h:", ":1", "h:0", "h:70000", "h:1,h:1", "a b:1", "h:x"])
def test_parse_sentinels_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_sentinels(bad)


def _spec(**keys: str) -> dict[str, str]:
    base = {"redis-list": "{a}q", "messages-per-replica": "5", **keys}
    return {ANNOTATION_PREFIX + k: v for k, v in base.items()}


@given(st.text(min_size=1, max_size=20))
def test_cluster_accepts_exactly_the_tagged_list_names(name: str) -> None:
    mapping = _spec(**{"redis-list": name, "redis-url": "redis://n:7000", "redis-cluster": "true"})
    try:
        spec = parse_spec(mapping)
    except InvalidSpecError as e:
        assert "hash tag" in str(e) or e.key.endswith("redis-list")
        return
    assert all(hash_tag(q) is not None for q in spec.redis_triggers[0].lists)


@pytest.mark.parametrize(
    ("keys", "key", "says"),
    [
        ({"redis-sentinels": "h:1"}, "redis-sentinel-master", "needed by redis-sentinels"),
        ({"redis-sentinel-master": "m"}, "redis-sentinels", "needed by redis-sentinel-master"),
        ({"redis-sentinels": "h:1", "redis-sentinel-master": "m", "redis-url": "redis://h:2"},
         "redis-url", "the sentinels name the master"),
        ({"redis-cluster": "true"}, "redis-cluster", "redis-url naming a node"),
        ({"redis-cluster": "true", "redis-url": "redis://h:1/1"}, "redis-url", "only database 0"),
        ({"redis-auth-secret": "Not_A_Name"}, "redis-auth-secret", "DNS-1123"),
        ({"redis-sentinels": "h"}, "redis-sentinels", "host:port"),
    ],
)  # fmt: skip
def test_server_keys_that_cannot_work_are_refused(
    keys: dict[str, str], key: str, says: str
) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        parse_spec(_spec(**keys))
    assert caught.value.key == ANNOTATION_PREFIX + key and says in str(caught.value)


def test_effective_values_show_the_server_keys_and_parse_back() -> None:
    keys = {"redis-sentinels": "s1:26379,s2:26379", "redis-sentinel-master": "main",
            "redis-auth-secret": "creds"}  # fmt: skip
    spec = parse_spec(_spec(**keys))
    shown = effective_values(spec)
    assert shown["redis-sentinels"] == "s1:26379,s2:26379" and shown["redis-url"] is None
    assert shown["redis-auth-secret"] == "creds" and shown["redis-cluster"] == "false"
    again = parse_spec({ANNOTATION_PREFIX + k: v for k, v in shown.items() if v is not None})
    assert again == spec


def test_the_secret_is_qualified_by_the_workloads_namespace() -> None:
    spec = in_namespace(parse_spec(_spec(**{"redis-auth-secret": "creds"})), "shop")
    assert RedisEndpoint.unfold(spec.redis_triggers[0].redis_url).secret == "shop/creds"
    plain = parse_spec(_spec())
    assert in_namespace(plain, "shop") is plain


def test_credentials_from_a_secret_write_the_client_key_privately() -> None:
    creds = RedisCredentials.from_secret(
        {"username": b"u", "password": b"p\n", "tls.crt": b"CERT", "tls.key": b"KEY"}, "Secret a/b"
    )
    assert creds.get_credentials() == ("u", "p")
    assert creds.key_file is not None and (Path(creds.key_file).stat().st_mode & 0o777) == 0o600
    assert Path(creds.key_file).read_text() == "KEY" and creds.origin == "Secret a/b"
    assert creds.tls_options()["ssl_cert_reqs"] == "required"
    assert creds.tls_options()["ssl_check_hostname"] is True


def test_check_validates_the_new_keys_offline(tmp_path: Path) -> None:
    manifest = tmp_path / "w.yaml"
    manifest.write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: w\n  labels:\n"
        "    queue-autoscaler.io/enabled: 'true'\n  annotations:\n"
        "    queue-autoscaler.io/redis-list: jobs\n"
        "    queue-autoscaler.io/messages-per-replica: '5'\n"
        "    queue-autoscaler.io/redis-url: redis://node:7000\n"
        "    queue-autoscaler.io/redis-cluster: 'true'\n"
        "spec: {}\n"
    )
    result = subprocess.run([sys.executable, "-m", "autoscaler", "check", str(manifest)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "hash tag" in result.stdout + result.stderr and "Traceback" not in result.stderr
