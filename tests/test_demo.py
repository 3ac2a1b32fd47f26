"""``autoscaler demo`` end to end, as a user runs it: a subprocess with its own Redis."""

from __future__ import annotations

import asyncio
import io
import json
import os
import re
import signal
import sys
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from rich.console import Console

from tests.e2e import eventually
from tests.test_local_target import pids_with

FAST = ["--latency-median-ms", "100", "--latency-p95-ms", "250", "--failure-rate", "0.02"]
# Required keys of the --json line (the contract).
KEYS = {"produced", "processed", "duplicated", "lost", "dead_lettered", "replica_seconds",
        "wait_p50_s", "wait_p95_s"}  # fmt: skip


async def demo(*flags: str, timeout_s: float = 60.0) -> tuple[int, list[str], str]:
    """Run the demo to its end; (exit code, stdout lines, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "autoscaler", "demo", *flags,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    assert not err.strip() or b"Traceback" not in err, err.decode()[-3000:]
    return process.returncode, out.decode().splitlines(), err.decode()


async def test_demo_scales_up_and_back_to_min_and_loses_nothing(tmp_path: Path) -> None:
    code, lines, err = await demo(
        "--messages", "300", "--json", *FAST, "--plot", str(tmp_path / "t.png"),
        "--export", str(tmp_path / "x"),
    )  # fmt: skip
    assert len(lines) == 1, lines[:5]  # with --json, stdout is the JSON only: `| jq` works
    summary = json.loads(lines[0])
    assert code == 0, err[-1500:]
    assert "demo summary" in err and f"demo: plot written to {tmp_path / 't.png'}" in err
    assert summary.keys() >= KEYS
    assert summary["produced"] == summary["processed"] == 300
    assert summary["lost"] == 0 and summary["pending"] == 0
    assert summary["peak_replicas"] > 1 and summary["final_replicas"] == 1
    assert summary["replica_seconds"] > 0 and 0 <= summary["wait_p50_s"] <= summary["wait_p95_s"]
    assert summary["drains"] >= 1 and summary["undrained_removals"] == 0
    assert (tmp_path / "t.png").read_bytes()[:4] == b"\x89PNG"
    trace = (tmp_path / "x" / "trace.csv").read_text().splitlines()
    assert trace[0] == "t_s,arrivals" and sum(int(r.split(",")[1]) for r in trace[1:]) == 300
    assert "redis-list:" in (tmp_path / "x" / "spec.yaml").read_text()


async def test_chaos_kills_replicas_and_loses_nothing() -> None:
    code, lines, err = await demo("--messages", "200", "--json", "--chaos", "--seed", "7", *FAST)
    summary = json.loads(lines[-1])
    assert code == 0, err[-1500:]
    assert summary["lost"] == 0 and summary["processed"] == 200
    assert summary["duplicated"] >= 0
    assert summary["restarts"] >= 1  # chaos did kill, and the target restarted them
    assert summary["undrained_removals"] == 0


async def test_sigterm_drains_stops_redis_and_leaves_no_process() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "autoscaler", "demo", "--messages", "1000", "--json", *FAST,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    port, lines = None, []
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:  # until the replicas are up and busy
            line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
            lines.append(line)
            if port is None and (found := re.search(r"redis://127\.0\.0\.1:(\d+)/", line)):
                port = int(found.group(1))
            up = re.search(r"processed=(\d+)/.* replicas=(\d+)", line)
            if up and int(up.group(1)) >= 20 and int(up.group(2)) >= 3:
                break  # mid-run: replicas up and busy
        else:
            pytest.fail(f"the demo did not scale up: {lines[-5:]}")
        assert port is not None
        assert pids_with(f"127.0.0.1:{port}")  # redis-server and the replicas
        process.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(process.communicate(), 45)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    summary = json.loads(rest.decode().splitlines()[-1])
    assert process.returncode == 130
    assert summary["lost"] == 0  # what was not processed is still queued: pending
    assert summary["processed"] >= 20
    accounted = summary["processed"] + summary["pending"] + summary["dead_lettered"]
    assert accounted == summary["produced"]
    leftovers = [pid for pid in pids_with(f"127.0.0.1:{port}") if pid != os.getpid()]
    assert leftovers == []  # no redis-server, launcher, sidecar of this demo left


async def test_sigkill_leaves_no_redis_server_or_replica() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "autoscaler", "demo", "--messages", "1000", "--json", *FAST,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    port = None
    try:
        async with asyncio.timeout(30):
            while port is None:  # the banner names the private Redis
                line = (await process.stderr.readline()).decode()
                assert line, "the demo exited before its banner"
                if found := re.search(r"redis://127\.0\.0\.1:(\d+)/", line):
                    port = int(found.group(1))
        await eventually(lambda: len(pids_with(f"127.0.0.1:{port}")) >= 2, 30,
                         "redis-server and a replica up")  # fmt: skip
    finally:
        process.kill()  # SIGKILL: the demo runs no clean-up of its own
        await process.wait()
    await eventually(
        lambda: [p for p in pids_with(f"127.0.0.1:{port}") if p != os.getpid()] == [],
        30,
        "the demo's redis-server and replicas to exit after it was SIGKILLed",
    )


@pytest.mark.parametrize("pattern", ["burst", "steady", "spiky"])
def test_producer_schedule_sums_to_the_messages(pattern: str) -> None:
    from autoscaler.demo.producer import load_cities, schedule

    for messages in (1, 300, 1000):
        plan = schedule(pattern, messages)
        assert sum(n for _, n in plan) == messages
        assert [t for t, _ in plan] == sorted({t for t, _ in plan})
    assert len(load_cities()) == 1000


def test_latency_draws_have_the_asked_median_and_p95() -> None:
    import random

    from autoscaler.demo.processor import Latency
    from autoscaler.demo.summary import percentile

    rng = random.Random(1)
    draws = [Latency(0.2, 0.5).draw(rng) for _ in range(4000)]
    assert percentile(draws, 0.5) == pytest.approx(0.2, rel=0.08)
    assert percentile(draws, 0.95) == pytest.approx(0.5, rel=0.12)


async def test_processor_records_successes_and_rejects_garbage(redis_url: str) -> None:
    import aiohttp
    import redis.asyncio as aioredis

    from autoscaler.demo.processor import Latency, Processor, serve

    client = aioredis.Redis.from_url(redis_url)
    runner, port = await serve(Processor(Latency(0.001, 0.002), 0.0, client), "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{port}/process"
            body = json.dumps({"id": "m1", "city": "Oslo", "enqueued_at": time.time() - 1})
            for _ in range(2):
                async with session.post(url, data=body) as response:
                    assert response.status == 200
            async with session.post(url, data=b"not json") as response:
                assert response.status == 400  # the sidecar dead-letters it
        assert await client.hget("demo:processed", "m1") == b"2"  # a duplicate, counted
        assert 1.0 <= float(await client.hget("demo:processed:waits", "m1") or 0) < 5
    finally:
        await runner.cleanup()
        await client.aclose()


# ---- what the demo shows -----------------------------------------------------------------


def test_banner_hides_the_password_and_fits_100_columns() -> None:
    from autoscaler.demo.run import Demo, DemoOptions

    out = io.StringIO()
    demo_ = Demo(DemoOptions(), "redis://user:sekret@127.0.0.1:6379/0", tag="")
    demo_._banner(out, 9100, Path("/tmp/autoscaler-demo-x"))
    text = out.getvalue()
    assert "sekret" not in text and "redis://user:***@127.0.0.1:6379/0" in text
    assert all(len(line) <= 100 for line in text.splitlines()), text
    assert "scale-down-stabilization=5s" in text  # the spec is all there, wrapped


async def test_history_skips_holds_and_labels_drains_and_chaos_kills(
    redis_client: aioredis.Redis,
) -> None:
    from autoscaler.demo.run import DemoOptions, demo_workload
    from autoscaler.demo.view import Sampler
    from autoscaler.targets.local.target import LocalTarget

    target = LocalTarget(demo_workload(DemoOptions(), "q", "rec"))
    drains = {"acknowledged": 0, "cancelled": 0}
    sampler = Sampler(redis_client, "demo-test:q", "demo-test:rec", "demo-test:dead", target,
                      lambda: 8, lambda: drains)  # fmt: skip
    at = time.time()
    for i, (current, desired, reason) in enumerate([
        (1, 8, "ScaleUpLimit"), (8, 8, "DesiredWithinRange"), (8, 8, "DesiredWithinRange"),
        (8, 6, "Draining"), (8, 6, "Draining"),  # one drain, decided again every cycle
    ]):  # fmt: skip
        await target.write_status({"current": current, "desired": desired, "reason": reason,
                                   "message": "m", "time": at + i})  # fmt: skip
    await target.record_event("ChaosKill", "SIGKILLed cities-3", warning=True)
    await target.record_event("DrainTimedOut", "told from drains_total", warning=True)
    drains["cancelled"] = 1
    history = (await sampler.sample()).decisions
    assert [line.split("  ", 1)[1] for line in history] == [
        "1 → 8  ScaleUpLimit: m",
        "8 → 6  Draining: m",
        "ChaosKill: SIGKILLed cities-3",
        "drain cancelled: the load rose, the victims went back to work",
    ]
    assert [m.kind for m in sampler.marks] == ["decision", "decision", "ChaosKill", "cancelled"]
    assert (await sampler.sample()).decisions == history  # nothing new: nothing added


def test_processed_is_counted_against_the_planned_messages() -> None:
    from autoscaler.demo.view import Sample, plain_line, render

    sample = Sample(t_s=3.0, backlog=50, in_flight=2, processed=10, dead=0, current=3,
                    desired=3, rate_per_s=4.0)  # fmt: skip
    assert "processed=10/1000 produced=120 " in plain_line(sample, 120, planned=1000)
    console = Console(file=io.StringIO(), width=120)
    console.print(render(sample, 120, "t", 8, planned=1000))
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert "10 / 1000" in shown and "120 / 1000" in shown


@pytest.mark.parametrize(("suffix", "magic"), [(".png", b"\x89PNG"), (".svg", b"<?xml")])
def test_plot_format_follows_the_extension(tmp_path: Path, suffix: str, magic: bytes) -> None:
    from autoscaler.demo.summary import plot
    from autoscaler.demo.view import Mark, Sample

    series = [Sample(t_s=float(t), backlog=max(0, 100 - 10 * t), in_flight=min(t, 4),
                     processed=10 * t, dead=0, current=4, desired=4, rate_per_s=10.0)
              for t in range(12)]  # fmt: skip
    marks = [Mark(5.0, "acknowledged", "drain done"), Mark(7.0, "ChaosKill", "killed")]
    path = tmp_path / f"t{suffix}"
    plot(series, path, "title", marks=marks)
    assert path.read_bytes().startswith(magic)
