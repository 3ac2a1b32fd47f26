"""The annotation table: parsing, every key's errors, defaults, the README's reference."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autoscaler.annotations import (
    ANNOTATION_PREFIX,
    KEY_NAMES,
    KEYS,
    Kind,
    effective_values,
    format_duration,
    parse_duration,
    parse_spec,
    reference_table,
    spec_with,
)
from autoscaler.errors import InvalidSpecError
from autoscaler.policy import PrometheusTrigger, RedisTrigger


def spec_of(**keys: str) -> dict[str, str]:
    return {ANNOTATION_PREFIX + k.replace("_", "-"): v for k, v in keys.items()}


BASE = spec_of(redis_list="jobs", messages_per_replica="50")


def test_minimal_redis_spec_has_documented_defaults() -> None:
    spec = parse_spec(BASE)
    assert spec.triggers == (RedisTrigger(lists=("jobs",), messages_per_replica=50.0),)
    assert (spec.min_replicas, spec.max_replicas) == (0, 100)
    assert spec.polling_interval_s == 5.0
    assert spec.tolerance == 0.1
    assert spec.scale_down_stabilization_s == 60.0
    assert (spec.scale_up.max_pods, spec.scale_up.max_percent, spec.scale_up.period_s) == (
        10,
        100.0,
        15.0,
    )
    assert spec.cooldown_s == 120.0
    assert spec.fallback_replicas is None and spec.failure_threshold == 3
    assert spec.drain and not spec.paused and spec.drain_timeout_s == 120.0
    assert spec.target_drain_time_s is None


def test_full_spec_with_two_triggers() -> None:
    spec = parse_spec(
        {
            **BASE,
            **spec_of(
                redis_list="a, b",
                redis_url="rediss://redis.example:6380/2",
                activation_messages="3",
                count_in_flight="false",
                prometheus_query="sum(rate(x[1m]))",
                prometheus_target="2.5",
                prometheus_url="http://prom:9090",
                min_replicas="1",
                max_replicas="20",
                polling_interval="1s",
                cooldown="5m",
                scale_down_stabilization="0",
                fallback_replicas="4",
                failure_threshold="2",
                paused="True",
                drain="false",
                drain_timeout="1h30m",
                target_drain_time="90",
            ),
            "kubectl.kubernetes.io/last-applied-configuration": "{}",
            ANNOTATION_PREFIX + "status": '{"desired": 3}',
        }
    )
    redis, prom = spec.triggers
    assert redis == RedisTrigger(("a", "b"), 50.0, "rediss://redis.example:6380/2", 3.0, False)
    assert prom == PrometheusTrigger("sum(rate(x[1m]))", 2.5, "http://prom:9090", 0.0)
    assert spec.cooldown_s == 300 and spec.drain_timeout_s == 5400
    assert spec.scale_down_stabilization_s == 0 and spec.polling_interval_s == 1
    assert spec.fallback_replicas == 4 and spec.paused and not spec.drain
    assert spec.target_drain_time_s == 90


@pytest.mark.parametrize(
    ("extra", "key", "expected"),
    [
        (
            {"messages-per-replicas": "5"},
            "messages-per-replicas",
            "did you mean messages-per-replica",
        ),
        ({"messages-per-replica": "0"}, "messages-per-replica", "number > 0"),
        ({"messages-per-replica": "ten"}, "messages-per-replica", "number > 0"),
        ({"messages-per-replica": "nan"}, "messages-per-replica", "number > 0"),
        ({"min-replicas": "-1"}, "min-replicas", "integer ≥ 0"),
        ({"min-replicas": "1.5"}, "min-replicas", "integer ≥ 0"),
        ({"min-replicas": "9", "max-replicas": "3"}, "min-replicas", "≤ max-replicas (3)"),
        ({"max-replicas": "0"}, "max-replicas", "integer ≥ 1"),
        ({"polling-interval": "5 minutes"}, "polling-interval", "duration"),
        ({"polling-interval": "0s"}, "polling-interval", "(≥ 0.1s)"),
        ({"polling-interval": "1ms"}, "polling-interval", "(≥ 0.1s)"),  # absurd: refused
        ({"cooldown": "-5s"}, "cooldown", "duration"),
        ({"tolerance": "1"}, "tolerance", "< 1"),
        ({"paused": "yes"}, "paused", "true or false"),
        ({"redis-list": "a,,b"}, "redis-list", "distinct list names"),
        ({"redis-list": "a,a"}, "redis-list", "distinct list names"),
        ({"redis-url": "http://x"}, "redis-url", "redis:// or rediss://"),
        ({"redis-url": "redis://:hunter2@x:6379"}, "redis-url", "credentials"),
        ({"redis-url": "redis://user@x:6379"}, "redis-url", "credentials"),
        ({"prometheus-query": "up"}, "prometheus-target", "required with prometheus-query"),
        ({"prometheus-target": "3"}, "prometheus-query", "needed by prometheus-target"),
        ({"fallback-replicas": "101"}, "fallback-replicas", "≤ max-replicas (100)"),
        ({"failure-threshold": "0"}, "failure-threshold", "integer ≥ 1"),
        ({"scale-up-max-pods": "0"}, "scale-up-max-pods", "integer ≥ 1"),
    ],
)
def test_bad_annotation_names_key_value_and_form(
    extra: dict[str, str], key: str, expected: str
) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        parse_spec({**BASE, **{ANNOTATION_PREFIX + k: v for k, v in extra.items()}})
    assert caught.value.key == ANNOTATION_PREFIX + key
    assert expected in str(caught.value)
    assert ANNOTATION_PREFIX + key in str(caught.value)


def test_no_trigger_is_an_error() -> None:
    with pytest.raises(InvalidSpecError, match="at least one trigger"):
        parse_spec(spec_of(min_replicas="1"))


def test_messages_per_replica_required_with_a_list() -> None:
    with pytest.raises(InvalidSpecError, match="messages-per-replica: missing"):
        parse_spec(spec_of(redis_list="jobs"))


def test_password_never_echoed() -> None:
    with pytest.raises(InvalidSpecError) as caught:
        parse_spec({**BASE, ANNOTATION_PREFIX + "redis-url": "redis://:s3cret@redis:6379"})
    assert "s3cret" not in str(caught.value)


def test_bare_keys_only_when_allowed() -> None:
    bare = {"redis-list": "jobs", "messages-per-replica": "5"}
    assert parse_spec(bare, allow_bare_keys=True).triggers[0].target == 5
    with pytest.raises(InvalidSpecError, match="at least one trigger"):
        parse_spec(bare)
    with pytest.raises(InvalidSpecError) as caught:
        parse_spec({**bare, "colldown": "5"}, allow_bare_keys=True)
    assert caught.value.key == "colldown"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("1.5s", 1.5), ("500ms", 0.5), ("5m", 300), ("1h30m", 5400)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "s", "5x", "1h 30m", "m5", "-5", "5mm", "1e3"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@given(st.integers(min_value=0, max_value=10**6))
def test_duration_round_trip(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@given(
    st.dictionaries(
        st.sampled_from(
            [
                ANNOTATION_PREFIX + k
                for k in (
                    "redis-list",
                    "messages-per-replica",
                    "min-replicas",
                    "max-replicas",
                    "cooldown",
                    "polling-interval",
                    "redis-url",
                    "prometheus-query",
                    "prometheus-target",
                    "tolerance",
                    "paused",
                    "fallback-replicas",
                    "nonsense",
                )
            ]
        ),
        st.text(max_size=20),
    )
)
def test_any_annotations_parse_or_raise_invalid_spec(annotations: dict[str, str]) -> None:
    try:
        spec = parse_spec(annotations)
    except InvalidSpecError as e:
        assert e.key.startswith(ANNOTATION_PREFIX)
    else:
        assert 0 <= spec.min_replicas <= spec.max_replicas
        assert all(t.target > 0 for t in spec.triggers)


def test_readme_reference_table_is_generated_from_keys() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert reference_table() in readme
    documented = [
        line.split("|")[1].strip().strip("`")
        for line in readme.splitlines()
        if line.startswith("| `") and line.split("|")[1].strip().strip("`") in KEY_NAMES
    ]
    assert documented == [key.name for key in KEYS]  # every key, once, in the table's order


def test_defaults_are_the_declared_ones() -> None:
    """An absent key takes the default its ``Key`` declares: parsing, the spec built for
    tests and simulations, and what ``check`` prints all agree with the table."""
    parsed = parse_spec(
        spec_of(
            redis_list="q", messages_per_replica="1", prometheus_query="up", prometheus_target="1"
        )
    )
    assert parsed == spec_with(parsed.triggers)
    shown = effective_values(parsed)
    on = {"spec", "scale_up", "redis", "prometheus"}  # the groups this spec switches on
    for key in KEYS:
        if key.group in on and not (key.head or key.required or key.kind is Kind.URL):
            assert shown[key.name] == key.format(key.default), key.name
            assert key.default_text == (shown[key.name] or "unset"), key.name
