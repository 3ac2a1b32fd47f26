"""The new keys offline: parsing and its messages (schedule, schedule-timezone, Redis memory
watermarks, paused-replicas, fallback-behavior), ``autoscaler check`` on them, and
``autoscaler simulate --start`` replaying a trace against a schedule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from autoscaler.annotations import ANNOTATION_PREFIX, effective_values, parse_spec
from autoscaler.cli import main
from autoscaler.errors import InvalidSpecError
from autoscaler.policy.spec import FallbackBehavior

BASE = {"redis-list": "jobs", "messages-per-replica": "10"}
HOURLY = "start=0 8 * * *, end=0 9 * * *, replicas=2"
EIGHT_AT_8 = "start=0 8 * * *, end=0 9 * * *, replicas=8"


def spec_of(**keys: str) -> dict[str, str]:
    values = {**BASE, **{k.replace("_", "-"): v for k, v in keys.items()}}
    return {ANNOTATION_PREFIX + k: v for k, v in values.items()}


def test_new_keys_parse_and_print_back() -> None:
    spec = parse_spec(
        spec_of(
            schedule="start=0 8 * * MON-FRI, end=0 18 * * MON-FRI, replicas=10; "
            "start=0 0 1 * *, end=0 6 1 * *, replicas=3",
            schedule_timezone="Europe/Paris",
            redis_memory_high="0.8",
            redis_memory_low="0.6",
            paused_replicas="0",
            fallback_replicas="2",
            fallback_behavior="static",
        )
    )
    assert spec.schedule is not None and spec.schedule.timezone == "Europe/Paris"
    assert [w.replicas for w in spec.schedule.windows] == [10, 3]
    trigger = spec.redis_triggers[0]
    assert (trigger.memory_high, trigger.memory_low) == (0.8, 0.6)
    assert spec.paused_replicas == 0
    assert spec.fallback_behavior is FallbackBehavior.STATIC
    shown = {k: v for k, v in effective_values(spec).items() if v is not None}
    assert parse_spec(shown, allow_bare_keys=True) == spec


@pytest.mark.parametrize(
    ("keys", "bad_key", "says"),
    [
        ({"schedule": "start=0 8 * * *, end=0 25 * * *, replicas=1"}, "schedule", "hour"),
        ({"schedule": "start=0 8 * * *, replicas=1"}, "schedule", "missing end"),
        ({"schedule": "start=0 8 * * *, end=0 9 * * *, replicas=x"}, "schedule", "replicas"),
        ({"schedule": HOURLY, "schedule_timezone": "Mars/Olympus"}, "schedule-timezone", "IANA"),
        ({"schedule_timezone": "Europe/Paris"}, "schedule", "needed by schedule-timezone"),
        ({"redis_memory_high": "1.5"}, "redis-memory-high", "< 1"),
        ({"redis_memory_high": "0"}, "redis-memory-high", "> 0"),
        ({"redis_memory_low": "0.5"}, "redis-memory-high", "needed by redis-memory-low"),
        (
            {"redis_memory_high": "0.6", "redis_memory_low": "0.8"},
            "redis-memory-low",
            "below redis-memory-high",
        ),
        ({"paused_replicas": "-1"}, "paused-replicas", "integer ≥ 0"),
        (
            {"fallback_replicas": "2", "fallback_behavior": "sometimes"},
            "fallback-behavior",
            "one of",
        ),
        ({"fallback_behavior": "current"}, "fallback-replicas", "needed by fallback-behavior"),
    ],
)  # fmt: skip
def test_bad_values_name_the_key_and_what_was_expected(
    keys: dict[str, str], bad_key: str, says: str
) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        parse_spec(spec_of(**keys))
    assert caught.value.key == ANNOTATION_PREFIX + bad_key
    assert says in str(caught.value)


def test_a_default_spelled_alone_is_harmless() -> None:
    """``schedule-timezone: UTC`` without a schedule changes nothing: not an error."""
    parse_spec(spec_of(schedule_timezone="UTC", fallback_behavior="current-if-higher"))


def workload(annotations: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "worker",
            "labels": {ANNOTATION_PREFIX + "enabled": "true"},
            "annotations": annotations,
        },
        "spec": {"template": {"spec": {"containers": [{"name": "w", "image": "w"}]}}},
    }


def test_check_validates_the_new_keys_offline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        yaml.safe_dump(workload(spec_of(schedule="start=0 8 * * *, end=0 9 * * *, replicas=2")))
    )
    assert main(["check", str(good)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(workload(spec_of(redis_memory_high="0.6", redis_memory_low="0.9")))
    )
    assert main(["check", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "redis-memory-low" in out and "below redis-memory-high" in out


TRACE = "t_s,arrivals\n" + "".join(f"{t},{20 if 600 <= t < 900 else 0}\n" for t in range(0, 1200))


def simulate(tmp_path: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    trace = tmp_path / "t.csv"
    trace.write_text(TRACE)
    spec = tmp_path / "spec.yaml"
    # the load arrives at 08:10; the schedule opens at 08:00 with 8 replicas
    spec.write_text(f"redis-list: jobs\nmessages-per-replica: 10\nschedule: {EIGHT_AT_8}\n")
    assert main(["simulate", "--trace", str(trace), "--spec", str(spec), "--json", *extra]) == 0
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    ours: dict[str, Any] = document["policies"]["queue_autoscaler"]
    return ours


def test_simulate_start_replays_the_schedule_floor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    without = simulate(tmp_path, capsys)
    scheduled = simulate(tmp_path, capsys, "--start", "2026-12-07T08:00")
    # warm before the load arrives: the queue waits less, at the cost of replica-seconds
    assert scheduled["replica_seconds"] > without["replica_seconds"]
    assert scheduled["wait_max_s"] < without["wait_max_s"]
    # in another zone the same wall time is another instant: 08:00 in Tokyo is 23:00 UTC
    shifted = simulate(tmp_path, capsys, "--start", "2026-12-07T08:00+09:00")
    assert shifted["replica_seconds"] == without["replica_seconds"]


def test_simulate_start_must_be_an_iso_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--start", "tomorrow morning"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "autoscaler simulate: --start: 'tomorrow morning': expected an ISO 8601 time such as "
        "2026-12-07T07:30 or 2026-12-07T07:30+01:00"
    )
