"""A live queue-autoscaler, observed by the session's real Prometheus, for the dashboard
and alert tests.

``observe(prometheus)`` runs the scenario below once per session (~15 s), records the
instant ``at`` when Prometheus holds every series, then stops every process: the tests
evaluate their PromQL *at that instant* through the HTTP API, so the processes do not
keep running (and eating CPU) while the rest of the suite runs.

What runs (namespace ``shop``, all on loopback):

- the ``Controller`` in a thread of its own with its own event loop: real Redis (a
  private server: other tests FLUSHALL theirs), in-memory targets, the real ``Drainer``
  and ``Reaper``, a real ``LeaderElector`` against the fake API server (so the leader
  gauge and the Kubernetes request counters are real), and ``/metrics`` served by
  ``autoscaler.metrics.start_http_server``;
- four ``autoscaler consume`` sidecars as subprocesses with ``--metrics-port``, forwarding
  to ``tests.processor`` servers in that same thread;
- Prometheus scrapes all of them every second, with the ``pod``/``namespace`` labels a
  PodMonitor would add (the controller's ``namespace`` is its own: ``honorLabels``).

Workloads, each meant to light one part of the dashboards and one alert:

=======  =================================================================================
jobs     2 sidecars; drained from 2 to 1 at once (drain acknowledged), then 1,000 messages
         with unique ids (scale up to max and back, a few retries, 3 too-big messages
         dead-lettered), then a steady trickle.
slow     2 sidecars stuck on a hanging processor: the drain times out; the victim is then
         killed and the reaper returns its message to the queue.
flood    max-replicas 1 and a producer that outpaces nobody: at max, backlog growing.
lossy    a target that ignores pod-deletion-cost: a pod that was not drained is removed.
blind    a Prometheus trigger on a closed port: source errors, then fallback-replicas.
typo     an invalid annotation: spec_valid 0.
=======  =================================================================================
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

from tests.livecomponents import (
    CONSUMER_JOB,
    CONTROLLER_JOB,
    CONTROLLER_POD,
    MAX_MESSAGE_BYTES,
    NAMESPACE,
    SPECS,
    WAIT_S,
    Background,
    ControllerSide,
    Sidecar,
    start_sidecar,
)
from tests.servers import PrometheusServer, RedisServer, start_redis

T = TypeVar("T")

UNIQUE_MESSAGES = 1000
TOO_BIG = 3  # messages over --max-message-bytes: dead-lettered by the sidecar
UP = f'up{{job=~"{CONTROLLER_JOB}|{CONSUMER_JOB}"}}'  # one sample per scrape of ours
# Dashboard variables as a user would pick them; every panel must show data for them.
VARIABLES = {"namespace": NAMESPACE, "workload": "jobs", "queue": "jobs"}


class QueryError(AssertionError):
    """Prometheus refused a query (a parse or evaluation error); the message is its own."""


@dataclass
class Observation:
    """What the tests look at: Prometheus at instant ``at``, and what the processes exported."""

    prometheus_url: str
    at: float
    exported: set[str]  # every sample name in the processes' /metrics, _created included
    label_values: set[str]  # every label value they exported, at the end
    before: Counter[str]  # series per sample name over all processes, before the 1,000
    after: Counter[str]  # … and after them
    prom_before: dict[str, int]  # series per metric name in Prometheus, before and after
    prom_after: dict[str, int]
    message_ids: set[str]
    workloads: int
    records: list[logging.LogRecord]  # the controller's log records (INFO and up)
    sidecar_logs: list[str]  # the sidecars' log lines (--log-format json)

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query at ``at`` (default: the observed instant); raises QueryError."""
        params = {"query": expr, "time": f"{self.at if at is None else at:.3f}"}
        return _api(self.prometheus_url, "query", params)["result"]  # type: ignore[no-any-return]

    def series(self, match: str) -> list[dict[str, str]]:
        """Label sets of the series matching ``match`` around the observed instant."""
        params = {"match[]": match, "start": f"{self.at - 60:.3f}", "end": f"{self.at:.3f}"}
        return _api(self.prometheus_url, "series", params)  # type: ignore[no-any-return]


def _api(base: str, path: str, params: dict[str, str]) -> Any:
    url = f"{base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
    except urllib.error.HTTPError as e:  # 400/422: a bad query, with Prometheus's reason
        body = json.load(e)
        raise QueryError(f"{body.get('errorType')}: {body.get('error')} in {params}") from e
    if body.get("status") != "success":
        raise QueryError(f"{body.get('errorType')}: {body.get('error')} in {params}")
    return body["data"]


# ---- the scenario -------------------------------------------------------------------------


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"live system: timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


def scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text: str = response.read().decode()
        return text


def series_counts(texts: list[str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for text in texts:
        for family in text_string_to_metric_families(text):
            counts.update(s.name for s in family.samples)
    return counts


class Scenario:
    """Drives the live system step by step; ``run`` returns the Observation."""

    def __init__(self, prometheus: PrometheusServer, workdir: Path) -> None:
        self.prometheus = prometheus
        self.workdir = workdir
        self.redis: RedisServer | None = None
        self.background: Background | None = None
        self.side: ControllerSide | None = None
        self.sidecars: dict[str, Sidecar] = {}
        self.records = Records()

    def call(self, make: Callable[[ControllerSide], Coroutine[Any, Any, T]]) -> T:
        assert self.background is not None and self.side is not None
        return self.background.run(make(self.side))

    def run(self) -> Observation:
        self.redis = start_redis()
        self.background = Background()
        self.side = side = ControllerSide(self.redis.url, self.workdir)
        self.background.run(side.start())
        for pod, queue, processor, flags in (
            ("jobs-a", "jobs", side.jobs_processor, ["--concurrency", "4"]),
            ("jobs-b", "jobs", side.jobs_processor, ["--concurrency", "4"]),
            ("slow-a", "slow", side.slow_processor, ["--drain-timeout", "60"]),
            ("slow-b", "slow", side.slow_processor, ["--drain-timeout", "60"]),
        ):
            self.sidecars[pod] = start_sidecar(
                pod, queue, processor.url, self.redis.url, self.workdir,
                "--request-timeout", "120", *flags,
            )  # fmt: skip
        self.publish_targets()
        self.wait(lambda: self.call(lambda s: s.registered("jobs")) == 2, "the jobs sidecars")
        self.wait(lambda: self.call(lambda s: s.registered("slow")) == 2, "the slow sidecars")
        # Both slow sidecars (one slot each) hold a message before the controller sees the
        # workload: its first decision (2 in flight → 1 replica) drains one of them, which
        # cannot finish. One message at a time: the second can only go to the other one.
        self.call(lambda s: s.push("slow", [b"slow-1"]))
        self.wait(lambda: side.slow_processor.in_progress == 1, "a slow sidecar to hold")
        self.call(lambda s: s.push("slow", [b"slow-2"]))
        self.wait(lambda: side.slow_processor.in_progress == 2, "the other one to hold")
        self.call(lambda s: s.push("lossy", [b"lossy"] * 30))
        # Prometheus must see every counter at zero before it moves, or increase() (and so
        # the alerts) would miss the first increment: start paused, wait, then resume.
        self.call(lambda s: s.apply_workloads(paused=True))
        self.wait_for_prometheus(
            'queue_autoscaler_undrained_pod_removals_total{workload="lossy"} == 0 and on () '
            'queue_autoscaler_drains_total{workload="slow", stage="timed_out"} == 0'
        )
        self.call(lambda s: s.apply_workloads(paused=False))
        self.call(lambda s: s.produce("flood", per_tick=3))
        self.wait(lambda: side.replicas("lossy") == 3, "lossy to scale up")
        self.call(lambda s: s.delete("lossy"))
        self.wait_sample("queue_autoscaler_drains_total", workload="jobs", stage="acknowledged")
        self.wait_sample("queue_autoscaler_drains_total", workload="slow", stage="timed_out")
        self.wait_sample("queue_autoscaler_undrained_pod_removals_total", workload="lossy")
        self.wait_sample("queue_autoscaler_fallback_active", workload="blind")
        # The drained-but-stuck victim dies holding its message: the reaper takes it back.
        victim = self.sidecars.pop("slow-b")
        victim.stop()
        self.publish_targets()
        self.wait_sample("queue_autoscaler_reaped_messages_total", queue="slow")
        self.wait_for_prometheus(f"count({UP} == 1) == {1 + len(self.sidecars)}")
        self.wait_for_prometheus('queue_autoscaler_reaped_messages_total{queue="slow"} > 0')
        before, prom_before = self.counts()
        ids = self.push_unique_load()
        after, prom_after = self.counts()
        return self.finish(before, after, prom_before, prom_after, ids)

    def push_unique_load(self) -> set[str]:
        """1,000 messages with unique ids and 3 too big ones; wait until all are done."""
        assert self.side is not None
        side, accepted_before = self.side, len(self.side.jobs_processor.accepted)
        ids = {uuid.uuid4().hex for _ in range(UNIQUE_MESSAGES)}
        messages = [json.dumps({"id": i}).encode() for i in ids]
        messages += [b"x" * (MAX_MESSAGE_BYTES + 1)] * TOO_BIG
        self.call(lambda s: s.push("jobs", messages))
        self.wait(
            lambda: len(side.jobs_processor.accepted) - accepted_before >= UNIQUE_MESSAGES,
            "1,000 messages processed",
        )
        self.wait(lambda: side.replicas("jobs") == 1, "jobs to scale back to 1")
        self.call(lambda s: s.produce("jobs", per_tick=2))  # a trickle: latency stays defined
        self.wait_for_prometheus(
            f'sum(queue_consumer_messages_total{{queue="jobs", outcome="acked"}}) '
            f">= {UNIQUE_MESSAGES}"
        )
        self.wait_for_prometheus(
            'sum(queue_consumer_messages_total{queue="jobs", outcome="dead_lettered"}) '
            f">= {TOO_BIG}"
        )
        self.wait_for_prometheus('queue_autoscaler_current_replicas{workload="jobs"} == 1')
        return ids

    def counts(self) -> tuple[Counter[str], dict[str, int]]:
        local = series_counts([scrape(a) for a in self.addresses()])
        result = _api(
            self.prometheus.url,
            "query",
            {"query": 'count by (__name__) ({__name__=~"queue_(autoscaler|consumer)_.+"})'},
        )["result"]
        remote = {r["metric"]["__name__"]: int(r["value"][1]) for r in result}
        return local, remote

    def finish(
        self,
        before: Counter[str],
        after: Counter[str],
        prom_before: dict[str, int],
        prom_after: dict[str, int],
        ids: set[str],
    ) -> Observation:
        self.wait_for_scrapes(3)  # so that rate windows hold the trickle
        texts = [scrape(a) for a in self.addresses()]
        at = time.time()
        # Every target scraped after ``at``: all its scrapes up to ``at`` are stored (a
        # target's scrapes are appended in order) before anything stops.
        self.wait_for_prometheus(f"min(timestamp({UP})) > {at:.3f}")
        exported: set[str] = set()
        values: set[str] = set()
        for text in texts:
            for family in text_string_to_metric_families(text):
                for s in family.samples:
                    exported.add(s.name)
                    values.update(s.labels.values())
        lines = [
            line for log in self.workdir.glob("*.log") for line in log.read_text().splitlines()
        ]
        return Observation(
            self.prometheus.url, at, exported, values, before, after, prom_before,
            prom_after, ids, workloads=len(SPECS), records=self.records.records,
            sidecar_logs=lines,
        )  # fmt: skip

    def addresses(self) -> list[str]:
        assert self.side is not None
        return [f"127.0.0.1:{self.side.port}", *(s.address for s in self.sidecars.values())]

    def publish_targets(self) -> None:
        """The scrape targets with the labels a PodMonitor gives them."""
        assert self.side is not None
        groups = [
            {
                "targets": [f"127.0.0.1:{self.side.port}"],
                "labels": {"job": CONTROLLER_JOB, "pod": CONTROLLER_POD},
            },
            *(
                {
                    "targets": [s.address],
                    "labels": {"job": CONSUMER_JOB, "namespace": NAMESPACE, "pod": s.pod},
                }
                for s in self.sidecars.values()
            ),
        ]
        _write_targets(self.prometheus, groups)

    def wait(self, check: Callable[[], bool], what: str) -> None:
        def guarded() -> bool:
            for sidecar in self.sidecars.values():
                if sidecar.process.poll() is not None:
                    raise RuntimeError(f"sidecar {sidecar.pod} exited: {sidecar.log.read_text()}")
            return check()

        try:
            wait_until(guarded, what)
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{self.diagnose()}") from None

    def diagnose(self) -> str:
        """What the sidecars logged and hold, for a failed wait."""
        assert self.side is not None
        lines = [f"{s.pod} log:\n{s.log.read_text()[-3000:]}" for s in self.sidecars.values()]
        for queue in ("jobs", "slow"):
            lines.append(
                f"{queue}: {self.call(functools.partial(ControllerSide.describe, queue=queue))}"
            )
        return "\n".join(lines)

    def wait_sample(self, name: str, **labels: str) -> None:
        assert self.side is not None
        side = self.side
        if "queue" not in labels:
            labels["namespace"] = NAMESPACE
        self.wait(lambda: side.sample(name, **labels) > 0, f"{name}{labels} > 0")

    def scrapes(self) -> dict[str, int]:
        """Scrapes Prometheus holds per target address (each one writes one ``up`` sample)."""
        params = {"query": f"count_over_time({UP}[1h])"}
        result = _api(self.prometheus.url, "query", params)["result"]
        return {r["metric"]["instance"]: int(r["value"][1]) for r in result}

    def wait_for_scrapes(self, count: int) -> None:
        """Until Prometheus holds ``count`` more scrapes of every current target."""
        before = self.scrapes()
        addresses = self.addresses()

        def done() -> bool:
            now = self.scrapes()
            return all(now.get(a, 0) >= before.get(a, 0) + count for a in addresses)

        self.wait(done, f"{count} more scrapes of {addresses}")

    def wait_for_prometheus(self, expr: str) -> None:
        def check() -> bool:
            params = {"query": expr}
            return bool(_api(self.prometheus.url, "query", params)["result"])

        self.wait(check, f"Prometheus: {expr}")

    def stop(self) -> None:
        for sidecar in self.sidecars.values():
            sidecar.stop()
        self.sidecars.clear()
        if self.background is not None:
            if self.side is not None:
                with contextlib.suppress(Exception):  # stop the rest even so
                    self.background.run(self.side.stop())
            self.background.close()
        if self.redis is not None:
            self.redis.stop()
        _write_targets(self.prometheus, [])


def _write_targets(prometheus: PrometheusServer, groups: list[dict[str, Any]]) -> None:
    """Our groups plus those of ``set_targets`` callers (the file is the server's own)."""
    others = [{"targets": a, "labels": {"job": j}} for j, a in prometheus.targets.items()]
    path = prometheus.workdir / "targets.json"
    tmp = path.with_suffix(".live.tmp")
    tmp.write_text(json.dumps(groups + others))
    os.replace(tmp, path)


class Records(logging.Handler):
    """Keeps every record it is given (from any thread)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def _capture(handler: logging.Handler) -> Iterator[None]:
    """The package's INFO records go to ``handler`` (the root level may hide them)."""
    package = logging.getLogger("autoscaler")
    level = package.level
    package.setLevel(logging.INFO)
    package.addHandler(handler)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(level)


_OBSERVED: list[Observation | BaseException] = []


def observe(prometheus: PrometheusServer) -> Observation:
    """Run the scenario once per session; every later call returns the same Observation."""
    if not _OBSERVED:
        with _workdir() as workdir:
            scenario = Scenario(prometheus, workdir)
            try:
                with _capture(scenario.records):
                    _OBSERVED.append(scenario.run())
            except BaseException as e:
                _OBSERVED.append(e)
            finally:
                scenario.stop()
    result = _OBSERVED[0]
    if isinstance(result, BaseException):
        raise result
    return result


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="qa-live-") as path:
        yield Path(path)


# ---- PromQL helpers for the tests ---------------------------------------------------------

METRIC_NAME = re.compile(r"\b(queue_(?:autoscaler|consumer)_[A-Za-z0-9_]+)\b")
VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
# Grafana's built-in intervals, as it would fill them for the last hour at a 1 s scrape.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}


def referenced_metrics(expr: str) -> set[str]:
    """Our metric names in a PromQL expression (``queue_consumer_state`` is also a label)."""
    return set(METRIC_NAME.findall(expr))


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Fill ``$name`` / ``${name}`` as Grafana would; an unknown variable is an error."""

    def fill(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        values = {**BUILTINS, **variables}
        if name not in values:
            raise KeyError(f"unknown variable ${name} in {expr!r}")
        return values[name]

    return VARIABLE.sub(fill, expr)
