"""The fast /metrics render gives, byte for byte, what prometheus_client's own does."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

import aiohttp
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.annotations import ANNOTATION_PREFIX, parse_spec
from autoscaler.exposition import Exposition
from autoscaler.metrics import (
    DIRECTIONS,
    DRAIN_STAGES,
    DURABILITY_RISKS,
    ControllerMetrics,
    start_http_server,
)
from autoscaler.policy import Reason, ScalingSpec

NAN = math.nan
REASONS = [str(r) for r in Reason]


def spec(lists: str | None = "a", prometheus: bool = False) -> ScalingSpec:
    """A Redis list trigger (``a,b``: one trigger), a Prometheus one, or both."""
    keys = {"max-replicas": "7"}
    if lists:
        keys |= {"redis-list": lists, "messages-per-replica": "5"}
    if prometheus:
        keys |= {"prometheus-query": "up", "prometheus-url": "http://prometheus:9090",
                 "prometheus-target": "3"}  # fmt: skip
    return parse_spec({ANNOTATION_PREFIX + k: v for k, v in keys.items()})


def rendered(metrics: ControllerMetrics) -> bytes:
    """The /metrics body (``render`` gives it in parts: its cached blocks)."""
    return b"".join(metrics.render())


class Observed:
    """A tracked workload's gauges, as the loop's ``Workload.gauges`` gives them: a new
    list at every call (the render keeps the last one to compare with)."""

    def __init__(self, values: Sequence[float | None] = ()) -> None:
        self.values = list(values)

    def gauges(self) -> list[float | None]:
        return list(self.values)


def test_render_is_generate_latest_byte_for_byte() -> None:
    registry = CollectorRegistry()
    metrics = ControllerMetrics(registry)
    names = ("plain", 'odd "quoted" \\ name\nline', "w-2")
    observed = [
        Observed([3, 2, 0.0, 12.0, 12, 1]),
        Observed([None, None, None, None, 4, None, 7.5, None, None]),  # two triggers, gaps
        Observed([]),
    ]
    specs = (spec("a"), spec("a,b", prometheus=True), spec(None, prometheus=True))
    for name, o, s in zip(names, observed, specs, strict=True):
        metrics.track("ns", name, s, o)
        metrics.decisions.labels("ns", name, "ScaleUp").inc(3)
        metrics.count_decisions([metrics.decisions.labels("ns", name, "WithinTolerance")])
        metrics.spec_valid.labels("ns", name).set(1)
    metrics.track("other", "two-triggers", spec("x"))  # not bound: no gauges
    metrics.spec_valid.labels("ns", "invalid").set(0)  # never tracked
    metrics.redis_memory_ratio.labels("ns", "plain").set(0.875)
    metrics.redis_maxmemory_unset.labels("ns", "w-2").set(True)
    metrics.redis_durability_risk.labels("ns", "plain", "eviction").set(1)
    metrics.drains.labels("ns", "plain", "acknowledged").inc()
    metrics.undrained_removals.labels("ns", "w-2").inc(2)
    metrics.source_errors.labels("ns", "plain", "redis:a").inc()
    metrics.reaped_messages.labels("b").inc(5)
    metrics.loop_duration.observe(0.02)
    metrics.kube_requests.labels("patch", "200").inc()
    metrics.leader.set(1)
    for _ in range(2):  # the first render fills the cache, the second reads it
        assert rendered(metrics) == generate_latest(registry)
    observed[0].values[3:5] = [1e9, 1e9]  # Go's exponent, as floatToGoString writes it
    body = rendered(metrics)
    assert body == generate_latest(registry)
    assert b'backlog{namespace="ns",trigger="redis:a",workload="plain"} 1e+09' in body
    assert b'trigger="redis:a,b",workload="odd \\"quoted\\" \\\\ name\\nline"} NaN' in body


# One change to the registry: (operation, workload number, argument).
OPERATIONS = st.tuples(
    st.sampled_from(
        ["track", "track_other", "forget", "gauges", "decide", "steady", "count", "set"]
    ),
    st.integers(0, 40),  # 41 workloads: two blocks of slots, and part of a third
    st.integers(0, 100),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(OPERATIONS, max_size=80))
def test_the_cached_render_follows_every_change(operations: list[tuple[str, int, int]]) -> None:
    """Whatever comes, goes, moves or stays between two renders, the cached render reads
    as ``generate_latest`` (fresh from ``collect``) does."""
    registry = CollectorRegistry()
    metrics = ControllerMetrics(registry)
    observed = {f"w{i}": Observed([1, 1, 0.0, 2.0, 2, 0]) for i in range(41)}
    for name, o in observed.items():
        metrics.track("ns", name, spec("a"), o)
    rendered(metrics)
    for op, i, n in operations:
        name = f"w{i}"
        if op == "track":
            observed[name] = observed.get(name) or Observed()  # after a forget
            s = spec("a,b", n % 2 == 0) if n % 3 else spec("c")
            metrics.track("ns", name, s, observed[name])
        elif op == "track_other":  # another spec, or no observed: what was bound stays
            metrics.track("ns", name, spec(None, True) if n % 2 else spec("c", True))
        elif op == "forget":
            metrics.forget("ns", name)
        elif op == "gauges" and name in observed:  # one value moves, or the list's length
            values = observed[name].values
            if n >= 90:
                del values[n - 90 :]
            else:
                values += [None] * (n % 9 + 1 - len(values))
                values[n % 9] = [None, 0.0, 1.0, n, 1e9, NAN][n // 9 % 6]
        elif op == "decide":
            metrics.decisions.labels("ns", name, REASONS[n % len(REASONS)]).inc()
        elif op == "steady":
            child = metrics.decisions.labels("ns", name, REASONS[n % 3])
            metrics.count_decisions([child] * (n % 3))
        elif op == "count":
            metrics.drains.labels("ns", name, DRAIN_STAGES[n % len(DRAIN_STAGES)]).inc(n)
            metrics.scale_events.labels("ns", name, DIRECTIONS[n % 2]).inc()
            metrics.source_errors.labels("ns", name, "redis:c").inc()
        elif op == "set":
            metrics.redis_durability_risk.labels("ns", name, DURABILITY_RISKS[n % 2]).set(n % 2)
            metrics.redis_memory_ratio.labels("ns", name).set(n / 100)
            metrics.spec_valid.labels("ns", name).set(n % 2)
        assert rendered(metrics) == generate_latest(registry), (op, i, n)


def test_a_change_made_during_a_render_shows_in_the_next_one() -> None:
    """The render thread reads while the event loop writes: here the writes come from
    inside the render (a workload's ``gauges()``), between two blocks of the same family.
    The render in progress stays well-formed; the next one is exact."""
    registry = CollectorRegistry()
    metrics = ControllerMetrics(registry)

    class Meddling(Observed):
        calls = 0

        def gauges(self) -> list[float | None]:
            Meddling.calls += 1
            if Meddling.calls == 2:  # in the middle of the poll: w1's own read, too
                metrics.track("ns", "w1", spec("b"), self)  # a new spec: its trigger renamed
                metrics.forget("ns", "w5")
                metrics.track("ns", "late", spec("z"), Observed([1, 1, 0.0, 9.0, 9, 0]))
                metrics.decisions.labels("ns", "w40", "ScaleDown").inc()
                metrics.drains.labels("ns", "w0", "requested").inc()
            return super().gauges()

    for i in range(70):
        metrics.track("ns", f"w{i}", spec("a"), Meddling([1, 1, 0.0, float(i), i, 0]))
    during = rendered(metrics)
    assert {f.name for f in text_string_to_metric_families(during.decode())}  # parses
    assert b'workload="w5"' not in during or b'workload="late"' not in during  # one slot
    assert b'trigger="redis:b",workload="w1"} 1.0' in during  # read again for the new spec
    assert rendered(metrics) == generate_latest(registry)


def test_renders_in_a_thread_while_the_loop_writes() -> None:
    registry = CollectorRegistry()
    metrics = ControllerMetrics(registry)
    observed = [Observed([1, 1, 0.0, float(i), i, 0]) for i in range(100)]
    stop = threading.Event()
    bodies: list[bytes] = []

    def render_until_stopped() -> None:
        while not stop.is_set():
            bodies.append(rendered(metrics))

    thread = threading.Thread(target=render_until_stopped)
    thread.start()
    try:
        for round_ in range(30):
            for i, o in enumerate(observed):
                if (i + round_) % 7 == 0:
                    metrics.forget("ns", f"w{i}")
                else:
                    metrics.track("ns", f"w{i}", spec("a"), o)
                    o.values[3] = float(round_)
                    metrics.decisions.labels("ns", f"w{i}", REASONS[round_ % 4]).inc()
    finally:
        stop.set()
        thread.join()
    for body in bodies:  # every body the thread rendered is well-formed
        samples = [s for f in text_string_to_metric_families(body.decode()) for s in f.samples]
        keys = [(s.name, tuple(sorted(s.labels.items()))) for s in samples]
        assert len(keys) == len(set(keys))
    assert rendered(metrics) == generate_latest(registry)


async def test_the_controller_serves_its_body_in_parts_as_generate_latest_gives_it() -> None:
    registry = CollectorRegistry()
    metrics = ControllerMetrics(registry)
    for i in range(700):  # a body of ~1.3 MB: sent in two writes
        metrics.track("ns", f"workload-{i}", spec("a"), Observed([1, 1, 0.0, float(i), i, 0]))
    runner = await start_http_server(registry, 0, host="127.0.0.1", render=metrics.render)
    try:
        port = runner.addresses[0][1]
        url = f"http://127.0.0.1:{port}/metrics"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            body = await response.read()
            assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    finally:
        await runner.cleanup()
    assert len(body) > 1 << 20
    assert body == generate_latest(registry)


async def test_a_stale_body_is_served_while_the_next_renders() -> None:
    renders: list[int] = []

    def render() -> bytes:
        renders.append(len(renders) + 1)
        return str(renders[-1]).encode()

    exposition = Exposition(CollectorRegistry(), 0.0, render, serve_stale=True)
    assert await exposition.body() == b"1"  # nothing yet: the first scrape waits
    assert await exposition.body() == b"1"  # stale: served at once, a render started
    assert exposition._refresh is not None
    await exposition._refresh
    assert await exposition.body() == b"2"
    await exposition._refresh
    fresh = Exposition(CollectorRegistry(), 0.0, render)  # the sidecar's: always fresh
    assert [await fresh.body(), await fresh.body()] == [b"4", b"5"]
