"""``autoscaler demo``: the whole system on this machine, from Redis to the summary.

Redis (``--redis-url``, else a private ``redis-server``) → a producer pushing city names
→ the controller with the local target (the same ``Controller``, ``Drainer`` and
``Reaper`` as in Kubernetes) → replicas, each a launcher running the sample processor
and the real ``autoscaler consume`` sidecar (``demo.replica``) → the view, the summary.

It ends when every produced message is processed (or dead-lettered) and the replicas are
back at min; ``--duration`` caps it, ``--forever`` repeats the workload until stopped.
A stop (Ctrl-C, SIGTERM) cancels the loop, drains every replica, stops Redis.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import shutil
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TextIO

from redis.asyncio import Redis
from redis.exceptions import RedisError

from autoscaler.annotations import parse_spec
from autoscaler.app.local import LocalRun
from autoscaler.demo import summary as summ
from autoscaler.demo.producer import Produced, load_cities, produce, schedule
from autoscaler.demo.redisserver import PrivateRedis, free_port
from autoscaler.demo.view import Display, Sample, Sampler
from autoscaler.errors import AutoscalerError, InputError, InvalidSpecError
from autoscaler.keys import dead_letter_key
from autoscaler.logs import log_event
from autoscaler.metrics import DrainStage
from autoscaler.redisconn import make_client
from autoscaler.remote import redact_url
from autoscaler.targets.local.file import LocalWorkload
from autoscaler.targets.local.target import LocalTarget

logger = logging.getLogger(__name__)

SAMPLE_S = 0.5
PING_TIMEOUT_S = 5.0
BANNER_WIDTH = 100


@dataclass(frozen=True)
class DemoOptions:
    """Every knob of the demo; the CLI's flags map one to one (see ``demo --help``)."""

    messages: int = 1000
    pattern: str = "burst"
    redis_url: str | None = None
    metrics_port: int = 0  # 0: a free port
    duration_s: float | None = None
    forever: bool = False
    json: bool = False
    plot: Path | None = None
    export: Path | None = None
    chaos: bool = False
    seed: int | None = None
    latency_median_ms: float = 200.0
    latency_p95_ms: float = 500.0
    failure_rate: float = 0.02
    concurrency: int = 1
    messages_per_replica: int = 10
    min_replicas: int = 1
    max_replicas: int = 8
    log_dir: Path | None = None


def spec_keys(o: DemoOptions, queue: str) -> dict[str, str]:
    """The demo's spec: fast on purpose (1 s polling, 5 s stabilization and cooldown)."""
    return {
        "redis-list": queue,
        "messages-per-replica": str(o.messages_per_replica),
        "min-replicas": str(o.min_replicas),
        "max-replicas": str(o.max_replicas),
        "polling-interval": "1s",
        "scale-up-max-pods": str(o.max_replicas),  # straight to the size the backlog needs
        "scale-down-stabilization": "5s",
        "cooldown": "5s",
        "drain-timeout": "15s",
    }


def demo_workload(o: DemoOptions, queue: str, record_key: str, tag: str = "") -> LocalWorkload:
    keys = spec_keys(o, queue)
    command = (
        sys.executable, "-m", "autoscaler.demo.replica",
        "--redis-url", "{redis_url}", "--queue", "{queue}", "--id", "{replica_id}",
        "--record", record_key, "--concurrency", str(o.concurrency),
        "--latency-median-ms", str(o.latency_median_ms),
        "--latency-p95-ms", str(o.latency_p95_ms),
        "--failure-rate", str(o.failure_rate),
        "--drain-timeout", "10", "--heartbeat-interval", "1",
    )  # fmt: skip
    try:
        spec = parse_spec(keys, allow_bare_keys=True, source="the demo's spec")
    except InvalidSpecError as e:  # from the flags: --min-replicas above --max-replicas
        flag = "--" + e.key
        raise InputError(f"{flag}: {e.value}: expected {e.expected}") from None
    env = {"PYTHONUNBUFFERED": "1"}
    return LocalWorkload(f"cities{tag}", keys, spec, command, env, where="demo")


async def run_demo(
    o: DemoOptions, stop: asyncio.Event, out: TextIO = sys.stdout, json_out: TextIO | None = None
) -> int:
    """The whole demo; the exit code (1 if a message was lost, 130 if interrupted).

    ``out`` takes the banner, the view and the text summary; ``json_out`` (default
    ``out``) the ``--json`` line, so that a pipe can get the JSON alone.
    """
    server = None if o.redis_url else await PrivateRedis.start()
    url = o.redis_url or (server.url if server else "")
    log_dir = o.log_dir or Path(tempfile.mkdtemp(prefix="autoscaler-demo-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    if out.isatty() and not o.json:  # the live view owns the terminal: logs go to a file
        _log_to(log_dir / "controller.log")
    try:
        demo = Demo(o, url, tag="" if server else "-" + secrets.token_hex(3))
        demo.json_out = json_out or out
        return await demo.run(stop, out, log_dir)
    finally:
        if server is not None:
            await server.stop()
        if o.log_dir is None:
            shutil.rmtree(log_dir, ignore_errors=True)


class Demo:
    def __init__(self, o: DemoOptions, redis_url: str, tag: str) -> None:
        self.o = o
        self.redis_url = redis_url
        self.queue = f"demo:cities{tag}"
        self.record_key = f"demo:processed{tag}"
        self.tag = tag  # on a shared Redis, every key and consumer id of this run carries it
        self.workload = demo_workload(o, self.queue, self.record_key, tag)
        self.produced = Produced()
        self.rng = random.Random(o.seed)
        self.finished_at: float | None = None
        self.json_out: TextIO = sys.stdout

    async def run(self, stop: asyncio.Event, out: TextIO, log_dir: Path) -> int:
        try:
            redis = make_client(self.redis_url)  # credentials from REDIS_PASSWORD(_FILE)
        except AutoscalerError as e:
            raise InputError(f"--redis-url: {e}") from e
        try:
            await _ping(redis, self.redis_url)
            return await self._run(redis, stop, out, log_dir)
        finally:
            await redis.aclose()

    async def _run(self, redis: Redis, stop: asyncio.Event, out: TextIO, log_dir: Path) -> int:
        local = LocalRun([self.workload], redis_url=self.redis_url, log_dir=log_dir,
                         grace_period_s=20.0, reap_interval_s=2.0)  # fmt: skip
        target = next(iter(local.inventory.targets.values()))
        sampler = Sampler(redis, self.queue, self.record_key, dead_letter_key(self.queue), target,
                          lambda: _desired(local, target),
                          lambda: _drain_outcomes(local, target))  # fmt: skip
        port = self.o.metrics_port or free_port()
        tasks: list[asyncio.Task[None]] = []
        started = time.monotonic()
        try:
            await local.start(port, metrics_host="127.0.0.1")
            self._banner(out, port, log_dir)
            tasks.append(asyncio.create_task(self._produce(redis), name="demo-producer"))
            if self.o.chaos:
                tasks.append(asyncio.create_task(self._chaos(target), name="demo-chaos"))
            interrupted = await self._watch(sampler, local, target, stop, out)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            replica_s = target.replica_seconds()  # before the final stop of the min replicas
            restarts = target.restarts()
            drains = _drain_counts(local, target)
            ended = time.monotonic()
            await local.aclose()
        result = await summ.collect(
            redis, produced=self.produced.ids, queue=self.queue, record_key=self.record_key,
            dead_key=dead_letter_key(self.queue), replica_seconds=replica_s,
            wall_s=ended - started, series=sampler.series, restarts=restarts,
            startup_s=list(sampler.startup_s.values()),
        )  # fmt: skip
        if self.tag:  # a shared Redis: leave nothing of this run behind
            async for key in redis.scan_iter(match=f"*{self.tag}*"):
                await redis.delete(key)
        result = replace(result, drains=drains[0], undrained_removals=drains[1])
        self._report(result, sampler, out)
        return 1 if result.lost else 130 if interrupted else 0

    def _banner(self, out: TextIO, port: int, log_dir: Path) -> None:
        """Short lines (≤ 100 columns, wrapped): a terminal of any width shows them whole."""
        spec = ", ".join(f"{k}={v}" for k, v in self.workload.spec_keys.items())
        lines = [
            f"demo: redis {redact_url(self.redis_url)}",
            f"demo: metrics http://127.0.0.1:{port}/metrics",
            f"demo: logs {log_dir}",
            f"demo: {self.o.messages} messages, pattern {self.o.pattern}",
            *textwrap.wrap(f"demo: spec {spec}", BANNER_WIDTH, subsequent_indent="      "),
        ]
        print("\n".join(lines), file=out, flush=True)

    async def _produce(self, redis: Redis) -> None:
        plan = schedule(self.o.pattern, self.o.messages)
        cities = load_cities()
        while True:
            await produce(redis, self.queue, plan, cities, self.produced)
            if not self.o.forever:
                return
            await asyncio.sleep(plan[-1][0] + 10.0)  # let it scale down, then again

    async def _chaos(self, target: LocalTarget) -> None:
        """SIGKILL a random running replica every few seconds (a pod killed)."""
        while True:
            await asyncio.sleep(self.rng.uniform(2.0, 5.0))
            running = sorted(name for name, p in target.live.items() if p.running)
            if running:
                victim = self.rng.choice(running)
                if target.kill(victim):
                    await target.record_event("ChaosKill", f"SIGKILLed {victim}", warning=True)

    async def _watch(self, sampler: Sampler, local: LocalRun, target: LocalTarget,
                     stop: asyncio.Event, out: TextIO) -> bool:  # fmt: skip
        """Sample and show until done, the duration, or a stop; True if stopped."""
        live = out.isatty() and not self.o.json
        title = f"queue-autoscaler demo — {self.workload.name}"
        planned = None if self.o.forever else self.o.messages
        with Display(out, live=live, title=title, max_replicas=self.o.max_replicas,
                     planned=planned) as display:  # fmt: skip
            while True:
                sample = await sampler.sample()
                display.show(sample, len(self.produced.ids))
                if self._done(sample, target) or (
                    self.o.duration_s is not None and sample.t_s >= self.o.duration_s
                ):
                    self.finished_at = time.time()
                    return False
                try:
                    async with asyncio.timeout(SAMPLE_S):
                        await stop.wait()
                    log_event(logger, "demo interrupted", logging.WARNING)
                    return True
                except TimeoutError:
                    if local.task is not None and local.task.done():
                        local.task.result()  # the loop crashed: say why

    def _done(self, s: Sample, target: LocalTarget) -> bool:
        produced = self.produced
        return (
            not self.o.forever
            and produced.done
            and s.processed + s.dead >= len(produced.ids)
            and s.backlog == 0
            and s.current == self.o.min_replicas
            and not target.removing
        )

    def _report(self, result: summ.Summary, sampler: Sampler, out: TextIO) -> None:
        print(result.text(), file=out, flush=True)  # first: a failing plot must not hide it
        if self.o.plot is not None and sampler.series:
            summ.plot(sampler.series, self.o.plot, f"autoscaler demo: {self.o.messages} "
                      f"messages, {self.o.pattern}", marks=sampler.marks)  # fmt: skip
            print(f"demo: plot written to {self.o.plot}", file=out)
        if self.o.export is not None:
            self._export(self.o.export, out, result.startup_p50_s)
        out.flush()
        if self.o.json:
            print(json.dumps(result.as_json()), file=self.json_out, flush=True)

    def _export(self, folder: Path, out: TextIO, startup_s: float | None) -> None:
        """The arrivals trace and the spec, for ``autoscaler simulate`` to replay."""
        folder.mkdir(parents=True, exist_ok=True)
        end = self.finished_at or time.time()
        end_s = max(1, round(end - self.produced.started_at)) if self.produced.started_at else 1
        summ.write_trace(folder / "trace.csv", self.produced.per_second, end_s)
        lines = [f"{k}: {json.dumps(v)}" for k, v in self.workload.spec_keys.items()]
        (folder / "spec.yaml").write_text("\n".join(lines) + "\n")
        print(f"demo: replay with: autoscaler simulate --trace {folder / 'trace.csv'} "
              f"--spec {folder / 'spec.yaml'} --service-time "
              f"{self.o.latency_median_ms / 1000:g} --concurrency {self.o.concurrency} "
              f"--startup-delay {startup_s or 1:g}", file=out)  # fmt: skip


async def _ping(redis: Redis, url: str) -> None:
    """Fail now, in one line, when the Redis of ``--redis-url`` cannot be reached."""
    try:
        async with asyncio.timeout(PING_TIMEOUT_S):
            await redis.ping()
    except (RedisError, OSError, TimeoutError) as e:
        why = str(e) or type(e).__name__
        raise InputError(f"--redis-url: {redact_url(url)}: cannot connect: {why}") from None


def _log_to(path: Path) -> None:
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(open(path, "a", encoding="utf-8"))  # noqa: SIM115 (lives as long as the process)


def _drain_counts(local: LocalRun, target: LocalTarget) -> tuple[int, int]:
    """(drains acknowledged, replicas removed undrained) from the controller's metrics."""
    labels = {"namespace": target.ref.namespace, "workload": target.ref.name}
    get = local.registry.get_sample_value
    stage = {"stage": DrainStage.ACKNOWLEDGED}
    acknowledged = get("queue_autoscaler_drains_total", {**labels, **stage})
    undrained = get("queue_autoscaler_undrained_pod_removals_total", labels)
    return int(acknowledged or 0), int(undrained or 0)


def _drain_outcomes(local: LocalRun, target: LocalTarget) -> dict[str, int]:
    """Drains so far by outcome stage, from the controller's ``drains_total``."""
    labels = {"namespace": target.ref.namespace, "workload": target.ref.name}
    get = local.registry.get_sample_value
    return {
        stage: int(get("queue_autoscaler_drains_total", {**labels, "stage": stage}) or 0)
        for stage in (DrainStage.ACKNOWLEDGED, DrainStage.CANCELLED, DrainStage.TIMED_OUT)
    }


def _desired(local: LocalRun, target: LocalTarget) -> int | None:
    w = local.controller.workloads.get(target.ref)
    return None if w is None or w.last_decision is None else w.last_decision.replicas
