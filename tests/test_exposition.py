"""The fast /metrics renderer gives exactly what prometheus_client's own does."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from autoscaler.annotations import ANNOTATION_PREFIX, parse_spec
from autoscaler.exposition import Exposition
from autoscaler.metrics import ControllerMetrics


def _parsed(text: bytes) -> dict[str, set[tuple[str, tuple[tuple[str, str], ...], float]]]:
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        out[family.name] = {
            (s.name, tuple(sorted(s.labels.items())), s.value) for s in family.samples
        }
    return out


def test_render_equals_generate_latest() -> None:
    registry = CollectorRegistry()
    metrics = ControllerMetrics(registry)
    keys = {"redis-list": "a,b", "messages-per-replica": "5", "max-replicas": "7"}
    spec = parse_spec({ANNOTATION_PREFIX + k: v for k, v in keys.items()})
    for name in ("plain", 'odd "quoted" \\ name\nline'):
        metrics.track("ns", name, spec)
        metrics.decisions.labels("ns", name, "ScaleUp").inc(3)
        metrics.count_decisions([metrics.decisions.labels("ns", name, "ScaleUp")])
    metrics.loop_duration.observe(0.02)
    metrics.kube_requests.labels("patch", "200").inc()
    metrics.leader.set(1)
    fast, reference = metrics.render(), generate_latest(registry)
    assert _parsed(fast) == _parsed(reference)
    assert fast.count(b"\n") == reference.count(b"\n")


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


def test_a_cached_render_follows_every_change() -> None:
    """The renderer keeps each child's last line: values that move, children added,
    removed or re-created, NaN and a plain gauge's set_function all show as
    generate_latest shows them."""
    registry = CollectorRegistry()
    metrics = ControllerMetrics(registry)
    spec = parse_spec(
        {ANNOTATION_PREFIX + k: v for k, v in (("redis-list", "a"), ("messages-per-replica", "5"))}
    )
    value = [2.0]
    for name in ("w1", "w2", "w3"):
        metrics.track("ns", name, spec)
        metrics.backlog.labels("ns", name, "redis:a").set_function(lambda: value[0])
    metrics.spec_valid.labels("ns", "w1").set_function(lambda: value[0] * 10)
    metrics.render()
    value[0] = float("nan")
    metrics.scale_events.labels("ns", "w2", "up").inc()
    metrics.forget("ns", "w3")
    metrics.track("ns", "w3", spec)  # re-created children, at zero again
    metrics.min_replicas.labels("ns", "w1").set(4)
    first = metrics.render()  # NaN: compared by line (NaN is unequal to itself in a set)
    assert first.count(b"\n") == generate_latest(registry).count(b"\n")
    assert b'queue_autoscaler_backlog{namespace="ns",workload="w1",trigger="redis:a"} NaN' in first
    value[0] = 3.0
    second = metrics.render()
    assert _parsed(second) == _parsed(generate_latest(registry))
    assert second.count(b"\n") == generate_latest(registry).count(b"\n")
