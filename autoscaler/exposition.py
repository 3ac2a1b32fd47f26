"""The /metrics body: written straight from the metric objects, off the event loop, cached.

At 10,000 workloads the registry holds ~150,000 samples. ``generate_latest`` builds a
``Sample`` per sample, validates and escapes every label name on every scrape (~23 µs a
line here: seconds a scrape). ``Renderer`` keeps, per labelled child, its label text and
its last line, reads the child's value directly (a bound gauge's function, a counter's
value) and formats a line again only when the value changed; histograms, info and
unlabelled metrics take the generic path (``_lines``). Same text format, same samples: a
test parses both and compares. It uses prometheus_client internals (``_metrics``, the
children by label values; ``_value``; ``_child_samples``); that test fails loudly if they
change. bench/bench_cycle.py --moving prints the figures beside a floor.

``Exposition`` serves the body rendered in a worker thread at most ``max_age_s`` ago: the
documented staleness of the controller's /metrics.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client import metrics as client_metrics
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics import MetricWrapperBase

# OpenMetrics type → the Prometheus text format's (as generate_latest munges them)
_TYPES = {"counter": "counter", "gauge": "gauge", "histogram": "histogram",
          "info": "gauge", "summary": "summary", "unknown": "untyped"}  # fmt: skip


def _value(v: float) -> str:
    if v != v:
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def _lines(wrapper: Any, out: list[str]) -> None:
    name, kind = wrapper._name, wrapper._type
    family = name + ("_total" if kind == "counter" else "_info" if kind == "info" else "")
    doc = wrapper._documentation.replace("\\", r"\\").replace("\n", r"\n")
    out.append(f"# HELP {family} {doc}\n# TYPE {family} {_TYPES.get(kind, 'untyped')}\n")
    apply_pending = getattr(wrapper, "_apply_pending", None)
    if apply_pending is not None:  # a BatchedCounter: queued increments first
        apply_pending()
    if not wrapper._labelnames:
        children: Iterable[tuple[tuple[str, ...], Any]] = [((), wrapper)]
    else:
        with wrapper._lock:
            children = list(wrapper._metrics.items())
    names = wrapper._labelnames
    for values, child in children:
        base = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))
        for suffix, extra, value, *_ in child._child_samples():
            labels = base
            if extra:
                more = ",".join(f'{n}="{_escape(v)}"' for n, v in sorted(extra.items()))
                labels = f"{labels},{more}" if labels else more
            braces = f"{{{labels}}}" if labels else ""
            out.append(f"{name}{suffix}{braces} {_value(value)}\n")


class BoundGauge(Gauge):
    """A ``Gauge`` whose children remember the function ``set_function`` bound them to,
    so that ``Renderer`` calls it directly instead of building a ``Sample`` around it."""

    _function: Callable[[], float] | None = None

    def set_function(self, f: Callable[[], float]) -> None:
        super().set_function(f)
        self._function = f


def _gauge_value(child: Any) -> float:
    """A gauge child's value, as ``_child_samples`` would wrap it in a ``Sample``."""
    function = getattr(child, "_function", None)
    if function is not None:  # a BoundGauge's
        return function()  # type: ignore[no-any-return]
    if "_child_samples" in child.__dict__:  # set_function on a plain Gauge
        return float(next(iter(child._child_samples())).value)
    return child._value.get()  # type: ignore[no-any-return]


SLICE_LINES = 2_000  # lines between two GIL hand-offs to the event loop (~1-2 ms of work)


class Renderer:
    """The text exposition of ``wrappers``, cached per labelled child.

    Per gauge or counter child it keeps its label text and the value and line of the last
    render: a child whose value did not change costs a read and a comparison, no
    formatting and no allocation. Nothing it keeps stays tracked by the garbage collector
    (strings, floats, tuples of them), and it copies the children as one dict, not as a
    tuple each: a full collection in this thread holds the GIL, and a tuple per child had
    one run mid-render (~230 ms at 10,000 workloads). Every
    ``SLICE_LINES`` lines, and between families, the thread sleeps 0 s: it lets go of the
    GIL, so the event loop waits for it at most a slice, and no C call holds the GIL for
    a whole body (one join and encode per family, not one of 19 MB). Not for two threads
    at once (a lock serialises).
    """

    def __init__(self, wrappers: Iterable[MetricWrapperBase]) -> None:
        self.wrappers = list(wrappers)
        # per family, per label values: (value, line) of the last render; "name{labels} "
        self._cache: dict[str, dict[tuple[str, ...], tuple[float, str]]] = {}
        self._prefixes: dict[str, dict[tuple[str, ...], str]] = {}
        self._lock = threading.Lock()

    def __call__(self) -> bytes:
        with self._lock:
            chunks: list[bytes] = []
            for wrapper in self.wrappers:
                out: list[str] = []
                if self._fast(wrapper):
                    self._family(wrapper, out)
                else:
                    _lines(wrapper, out)
                chunks.append("".join(out).encode())
                time.sleep(0)
            return b"".join(chunks)

    @staticmethod
    def _fast(wrapper: MetricWrapperBase) -> bool:
        if not wrapper._labelnames:
            return False
        if isinstance(wrapper, Counter):
            return not client_metrics._use_created  # one sample a child: ``_total``
        return isinstance(wrapper, Gauge) and wrapper._multiprocess_mode == "all"

    def _family(self, wrapper: Any, out: list[str]) -> None:
        name = wrapper._name
        counter = isinstance(wrapper, Counter)
        family = name + "_total" if counter else name
        doc = wrapper._documentation.replace("\\", r"\\").replace("\n", r"\n")
        kind = "counter" if counter else "gauge"
        out.append(f"# HELP {family} {doc}\n# TYPE {family} {kind}\n")
        apply_pending = getattr(wrapper, "_apply_pending", None)
        if apply_pending is not None:  # a BatchedCounter: queued increments first
            apply_pending()
        with wrapper._lock:  # one dict copied, not a tuple per child: no food for the GC
            children: dict[tuple[str, ...], Any] = wrapper._metrics.copy()
        cache = self._cache.setdefault(family, {})
        prefixes = self._prefixes.setdefault(family, {})
        for n, (values, child) in enumerate(children.items(), 1):
            value = child._value.get() if counter else _gauge_value(child)
            last = cache.get(values)
            if last is None or last[0] != value:  # NaN never equals itself: written again
                prefix = prefixes.get(values)
                if prefix is None:
                    labels = ",".join(
                        f'{k}="{_escape(v)}"'
                        for k, v in zip(wrapper._labelnames, values, strict=True)
                    )
                    prefix = prefixes[values] = f"{family}{{{labels}}} "
                last = cache[values] = (value, f"{prefix}{_value(value)}\n")
            out.append(last[1])
            if n % SLICE_LINES == 0:
                time.sleep(0)
        if len(cache) > len(children):  # children removed (forgotten workloads)
            for values in [v for v in cache if v not in children]:
                del cache[values], prefixes[values]


class Exposition:
    """The /metrics body, rendered in a worker thread, never on the event loop.

    A body younger than ``max_age_s`` is served as is. An older one: with
    ``serve_stale`` (the controller), it is served at once while one fresh render starts
    in the background, so a scrape never waits for a render and reads values as of the
    previous scrape (at most one scrape interval plus one render old); without (the
    sidecar's small registry), the scrape waits, off the loop, for the fresh render,
    shared by every scrape arriving meanwhile. ``render`` defaults to
    ``generate_latest(registry)``.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        max_age_s: float = 0.0,
        render: Callable[[], bytes] | None = None,
        *,
        serve_stale: bool = False,
    ) -> None:
        self.render = render or (lambda: generate_latest(registry))
        self.max_age_s = max_age_s
        self.serve_stale = serve_stale
        self._body: bytes | None = None
        self._rendered_at = -float("inf")
        self._lock = asyncio.Lock()
        self._refresh: asyncio.Task[bytes] | None = None

    async def body(self) -> bytes:
        loop = asyncio.get_running_loop()
        if self._body is not None and loop.time() - self._rendered_at <= self.max_age_s:
            return self._body
        if self.serve_stale and self._body is not None:
            if self._refresh is None or self._refresh.done():
                self._refresh = asyncio.create_task(self._render())
            return self._body
        return await self._render()

    async def _render(self) -> bytes:
        loop = asyncio.get_running_loop()
        async with self._lock:
            if self._body is None or loop.time() - self._rendered_at > self.max_age_s:
                started = loop.time()
                self._body = await asyncio.to_thread(self.render)
                self._rendered_at = started
            return self._body
