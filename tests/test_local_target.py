"""The local target: real processes, removed in deletion-cost order, restarted when they die."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import looptime
import pytest
import redis.asyncio as aioredis

from autoscaler.annotations import parse_spec
from autoscaler.app.local import LocalRun
from autoscaler.drain import LOWEST_DELETION_COST
from autoscaler.targets.local.file import LocalWorkload
from autoscaler.targets.local.target import LocalTarget

SLEEPER = "import sys, time; time.sleep(600)"


def workload(command: tuple[str, ...], name: str = "w", **keys: str) -> LocalWorkload:
    spec_keys = {"redis-list": "jobs", "messages-per-replica": "10", **keys}
    spec = parse_spec(spec_keys, allow_bare_keys=True)
    return LocalWorkload(name, spec_keys, spec, command, {"MARK": "{replica_id}"})


def pids_with(marker: str) -> list[int]:
    """Live processes whose command line mentions ``marker`` (zombies included)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


async def wait_for(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        await asyncio.sleep(0.02)


@pytest.fixture
def marker() -> str:
    return f"qa-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def target(marker: str) -> AsyncIterator[LocalTarget]:
    t = LocalTarget(workload((sys.executable, "-c", SLEEPER, marker, "{replica_id}")),
                    grace_period_s=2.0)  # fmt: skip
    yield t
    await t.aclose()
    assert pids_with(marker) == []


async def running(t: LocalTarget) -> list[str]:
    return [r.name for r in await t.replicas() if r.ready]


async def test_scale_up_then_down_removes_lowest_cost_then_newest(
    target: LocalTarget, marker: str
) -> None:
    events: list[int] = []
    target.on_scaled = lambda t: events.append(t.desired)
    await target.scale(4)
    assert [r.name for r in await target.replicas()] == ["w-1", "w-2", "w-3", "w-4"]
    await wait_for(lambda: len(pids_with(marker)) == 4)
    await target.set_deletion_cost("w-1", LOWEST_DELETION_COST)
    await target.set_deletion_cost("w-3", LOWEST_DELETION_COST)
    await target.set_deletion_cost("gone", 5)  # unknown replica: ignored, like a 404
    await target.scale(2)
    assert sorted(target.live) == ["w-2", "w-4"]  # exactly the cheapest, not the newest
    await target.settled()
    assert len(pids_with(marker)) == 2
    await target.scale(3)  # ids are never reused
    await target.scale(1)  # no costs: newest first
    assert list(target.live) == ["w-2"]
    assert events == [4, 2, 3, 1]
    await target.settled()
    assert target.replica_seconds() > 0


async def test_crashed_replica_restarts_under_the_same_id(target: LocalTarget) -> None:
    await target.scale(2)
    await wait_for(lambda: all(p.running for p in target.live.values()))
    first = target.live["w-1"].pid
    assert first is not None and target.kill("w-1")
    await wait_for(lambda: target.live["w-1"].restarts == 1 and target.live["w-1"].running)
    assert target.live["w-1"].pid != first
    assert sorted(target.live) == ["w-1", "w-2"]
    assert target.events[-1].reason == "ReplicaRestarted"
    pid = target.live["w-2"].pid
    assert pid is not None
    os.kill(pid, signal.SIGTERM)  # a clean exit is restarted too
    await wait_for(lambda: target.live["w-2"].restarts == 1 and target.live["w-2"].running)


async def test_stop_kills_the_whole_group_and_ignores_sigterm_after_grace(
    marker: str, caplog: pytest.LogCaptureFixture
) -> None:
    script = (
        "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', '{marker}']);"
        "time.sleep(600)"
    )
    grace_s = 30.0  # a realistic grace period: it passes on fake time
    t = LocalTarget(workload((sys.executable, "-c", script, marker)), grace_period_s=grace_s)
    await t.scale(1)
    await wait_for(lambda: len(pids_with(marker)) == 2)  # the leader and its child
    loop = asyncio.get_running_loop()
    with looptime.enabled(strict=True):  # the grace is loop time; the processes are real
        started = loop.time()
        await t.scale(0)
        assert await t.replicas() == []
        await t.settled()
        waited = loop.time() - started
    # The leader ignored SIGTERM: the stop waited the whole grace period, then killed it,
    # and did not wait longer (nothing else runs on this loop meanwhile).
    assert grace_s <= waited < grace_s + 1
    killed = [r for r in caplog.records if r.getMessage() == "replica killed after grace period"]
    assert len(killed) == 1
    # SIGKILLed, reaped: no orphan, no zombie (the grandchild dies a moment after the signal)
    await wait_for(lambda: pids_with(marker) == [], timeout_s=2)


async def test_placeholders_and_env(tmp_path: Path) -> None:
    script = (
        "import os, sys, time; open(sys.argv[1], 'w').write("
        "' '.join([os.environ['POD_NAME'], os.environ['MARK'], sys.argv[2], sys.argv[3]]));"
        "time.sleep(600)"
    )
    command = (sys.executable, "-c", script, f"{tmp_path}/{{replica_id}}", "{queue}", "{redis_url}")
    t = LocalTarget(workload(command, name="env"), redis_url="redis://127.0.0.1:1/0")
    try:
        await t.scale(1)
        out = tmp_path / "env-1"
        await wait_for(lambda: out.exists() and out.read_text() != "")
        assert out.read_text() == "env-1 env-1 jobs redis://127.0.0.1:1/0"
    finally:
        await t.aclose()


async def test_local_run_scales_processes_on_backlog(
    redis_url: str, redis_client: aioredis.Redis, marker: str
) -> None:
    w = workload((sys.executable, "-c", SLEEPER, marker), drain="false", **{
        "polling-interval": "200ms", "scale-down-stabilization": "0", "min-replicas": "1",
        "max-replicas": "5", "scale-up-max-pods": "10",
    })  # fmt: skip
    run = LocalRun([w], redis_url=redis_url, grace_period_s=2.0)
    stop = asyncio.Event()
    try:
        await run.start()
        target = run.inventory.targets[next(iter(run.inventory.targets))]
        assert list(target.live) == [f"w-{run.run_id}-1"]  # min-replicas at start
        await redis_client.lpush("jobs", *["x"] * 45)
        await wait_for(lambda: len(target.live) == 5)
        await wait_for(lambda: len(pids_with(marker)) == 5)
        await redis_client.delete("jobs")
        await wait_for(lambda: len(target.live) == 1)
        assert run.controller.workloads[target.ref].current == 1
        assert any(e.reason == "ScaleUp" for e in target.events)
        assert target.statuses[-1]["desired"] == 1
    finally:
        stop.set()
        await run.aclose()
    assert pids_with(marker) == []


# A leader that starts a child in its own group and environment, then sleeps: the parent-
# death signal reaches the leader only, so the child is what the next start must sweep.
WITH_CHILD = (
    "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', "
    "sys.argv[1] + '-child']); "
    "time.sleep(600)"
)


def test_a_sigkilled_run_local_leaves_no_replica_and_a_restart_sweeps_orphans(
    tmp_path: Path, redis_url: str
) -> None:
    """SIGKILL ``run --local``: its replica leaders die with it (parent-death signal); a
    child they left is stopped by the next start, whose replica ids are new; a second
    controller for the same workloads is refused while one runs."""
    import subprocess

    from tests.servers import wait_until

    marker = f"qa-orphan-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "w.yaml"
    path.write_text(
        "- name: sleepers\n  redis-list: jobs\n  messages-per-replica: 10\n  min-replicas: 1\n"
        f'  command: [{sys.executable}, -c, "{WITH_CHILD}", {marker}]\n'
    )
    argv = [sys.executable, "-m", "autoscaler", "run", "--local", str(path),
            "--redis-url", redis_url, "--metrics-port", "0", "--log-format", "json"]  # fmt: skip
    logs = [tmp_path / f"run-{n}.log" for n in range(3)]

    def start(log: Path) -> subprocess.Popen[bytes]:
        with log.open("wb") as handle:  # the child has its own copy
            return subprocess.Popen(argv, stderr=handle)

    first = start(logs[0])
    second: subprocess.Popen[bytes] | None = None
    try:
        wait_until(lambda: len(pids_with(marker)) == 2, 20, "a replica and its child")
        [child] = pids_with(marker + "-child")
        first.kill()
        first.wait()
        wait_until(lambda: pids_with(marker) == [child], 10, "the leader gone, its child left")
        second = start(logs[1])
        wait_until(lambda: child not in pids_with(marker) and len(pids_with(marker)) == 2, 30,
                   "the orphan stopped, a new replica and child")  # fmt: skip
        refused = subprocess.run(argv, stderr=subprocess.PIPE, timeout=30)
        assert refused.returncode == 2
        assert b"another local controller" in refused.stderr, refused.stderr
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    assert pids_with(marker) == []
    started = [
        line
        for log in logs[:2]
        for line in log.read_text().splitlines()
        if "replica started" in line
    ]
    ids = [json.loads(line)["replica"] for line in started]
    assert len(ids) == 2 and len(set(ids)) == 2, ids  # a new id after the restart
    swept = [line for line in logs[1].read_text().splitlines() if "stopping orphan" in line]
    assert swept and json.loads(swept[0])["replicas"] == ids[0], swept
