"""The controller's per-workload series: compact, rendered in cached blocks, a Collector.

At 10,000 workloads the controller exports ~22 lines a workload. As prometheus_client
children every series was an object with a lock, a value object and its label tuple
(~600-1,200 bytes each: ~17 KB of the ~23 KB of controller state a workload), and a
scrape looked at each of them (docs/performance.md). Here a workload is one ``_Series``:
its counters and set gauges are floats in small lists, its bound gauges are read from
the workload itself when rendered, its label values are the workload's own strings.
``Family.labels(...)`` hands out a ``Child`` with prometheus_client's verbs (``inc``,
``set``), so callers don't change.

**Bound gauges.** A tracked workload's ``observed.gauges()`` returns all of its gauges'
values at once: first ``head`` per workload, then ``stride`` per trigger, in the spec's
order (None: not known, shown as NaN — a gap). A family's ``bound`` is its position
there. One call a workload per render, not one per series: at 10,000 workloads six
method calls a workload cost ~40 ms a render.

**Render.** Workloads are numbered (slots, the lowest free one reused). Per family, the
text of every ``BLOCK`` consecutive slots is kept as bytes, and formatted again only when
its block is marked: a counter or set gauge marks it when it changes; the render marks
it for a bound gauge whose value differs from the last render's. A family's text is then
one C join of its blocks. ``KeyedCounters`` (per queue, few changes) keep one text.

**Same as prometheus_client.** ``WorkloadStore`` is a registered collector: ``collect``
(the slow path: ``get_sample_value``, ``generate_latest``, the docs) yields the same
families, samples and order that ``render`` writes, and ``render`` writes each line byte
for byte as ``generate_latest`` does (labels sorted by name, ``floatToGoString``). A
hypothesis test checks it over random changes (tests/test_exposition.py).

**Threads.** Every change comes from the event loop's thread; ``render`` runs in one
worker thread at a time and only reads (and keeps its own cache). A change writes, then
marks its block; a render clears a mark, then reads and formats the block in one pass:
a change made during a render is never lost, at worst it shows one render later. Each
line is read whole (a workload's triggers are one tuple, a dict of values is copied in
one C call); a block may mix lines from before and after a change, never half a line.
Bound values are written for the triggers they were read with (``seen_triggers``): a new
spec between the poll and the lines never labels a reading with another trigger. The
render hands the GIL over (``time.sleep(0)``) every ``SLICE`` series or lines and between
families, so the event loop waits for it at most a slice (docs/performance.md, goal 4: loop lag).
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final, Protocol

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

TRIGGER: Final = "trigger"
SHIFT: Final = 5
BLOCK: Final = 1 << SHIFT  # slots a cached text covers (~6,000 bytes objects at 10,000)
SLICE: Final = 2_000  # series read, or lines formatted, between two GIL hand-offs (~1 ms)
SPARSE: Final = 8  # a label with more values than this: a dict of those created, not a list
MAX_PENDING: Final = 1_000_000  # queued increments of a deferred family (8 bytes each)
ZERO: Final = 0.0  # every series created at zero shares this float
NAN: Final = float("nan")


class Observed(Protocol):
    def gauges(self) -> Sequence[float | None]: ...


class _Bound:
    """A bound gauge's stored value: read from ``observed.gauges()`` when rendered."""

    def __repr__(self) -> str:
        return "BOUND"


BOUND: Final = _Bound()

# floatToGoString of the values seen (counts, lengths); None, "not known": NaN
_FORMATTED: dict[float | None, str] = {None: "NaN"}


def _fmt(v: float | None) -> str:
    s = _FORMATTED.get(v)
    if s is None:
        s = floatToGoString(v)  # type: ignore[no-untyped-call]
        if v == v and len(_FORMATTED) < 100_000:  # NaN would never be found again
            _FORMATTED[v] = s
    return s


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value  # the same object: no copy of a workload's name


def _help(name: str, documentation: str, kind: str) -> bytes:
    doc = documentation.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {doc}\n# TYPE {name} {kind}\n".encode()


class _Trigger:
    """One trigger of a workload: its label text and its trigger-level values."""

    __slots__ = ("index", "mid", "name", "vals")

    def __init__(self, name: str, index: int, width: int) -> None:
        self.name = name
        self.mid = f'",trigger="{_escape(name)}",workload="'  # between namespace and workload
        self.index = index  # in the spec: where its bound values are in gauges()
        self.vals: list[Any] = [None] * width  # per trigger-level family: None, value, BOUND


class _Series:
    """One workload: its labels, what its bound gauges read, its values per family."""

    __slots__ = (
        "ens", "ewl", "name", "ns", "observed", "seen", "seen_triggers", "slot", "triggers", "vals"
    )  # fmt: skip

    def __init__(self, slot: int, ns: str, name: str, width: int) -> None:
        self.slot = slot
        self.ns, self.name = ns, name
        self.ens, self.ewl = _escape(ns), _escape(name)
        self.observed: Observed | None = None
        # gauges() as of the last render's poll, and the triggers they were read for (a
        # new spec may come between the poll and the lines: these stay consistent)
        self.seen: Sequence[float | None] | None = None
        self.seen_triggers: tuple[_Trigger, ...] = ()
        self.triggers: tuple[_Trigger, ...] = ()
        # per workload-level family: None (no series), a value, BOUND, or the values by
        # label value (a list, or a dict of those created: see SPARSE)
        self.vals: list[Any] = [None] * width


class Child:
    """One series, as ``labels()`` returns it: the verbs of a prometheus_client child."""

    __slots__ = ("_at", "_family", "_slot", "_values")

    def __init__(self, family: Family, values: Any, at: int, slot: int) -> None:
        self._family, self._values, self._at, self._slot = family, values, at, slot

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        if self._family.deferred:
            self._family.defer((self,), amount)
            return
        self._values[self._at] += amount
        self._family.dirty[self._slot >> SHIFT] = 1  # after the write: see the docstring

    def set(self, value: float) -> None:
        self._values[self._at] = float(value)
        self._family.dirty[self._slot >> SHIFT] = 1


class Family:
    """One exposed family of per-workload series: ``namespace``, ``workload`` and at most
    one more label: ``trigger`` (the workload's triggers), or a label with a fixed set of
    ``values`` (``stage``, ``reason`` …). ``bound``: a gauge that a series bound by
    ``WorkloadStore.track`` reads from the workload (see the module docstring)."""

    def __init__(
        self,
        store: WorkloadStore,
        name: str,
        documentation: str,
        kind: str,
        label: str | None = None,
        values: Sequence[str] = (),
        bound: int | None = None,
        deferred: bool = False,
    ) -> None:
        assert kind in ("counter", "gauge")
        assert not deferred or kind == "counter"
        assert label == TRIGGER or (label is None) == (not values), "a label has its values"
        assert bound is None or not values, "a bound gauge: per workload or per trigger"
        self.store, self.name, self.documentation, self.kind = store, name, documentation, kind
        self.exposed = name + "_total" if kind == "counter" else name
        self.label, self.values, self.bound = label, tuple(values), bound
        self.labelnames = ("namespace", "workload", *([label] if label else []))
        self.trigger_level = label == TRIGGER
        self.sparse = len(self.values) > SPARSE
        self._at = {v: k for k, v in enumerate(self.values)}
        # A line: head + namespace + mid + workload + '"} ' + value. Labels sorted by name,
        # as generate_latest writes them: ours sort before namespace or between the two.
        first = label is not None and label < "namespace"
        assert label is None or first or "namespace" < label < "workload"
        heads, mids = [], []
        for v in self.values or [""]:
            pair = f'{label}="{_escape(v)}",' if label else ""
            heads.append(f'{self.exposed}{{{pair if first else ""}namespace="')
            mids.append(f'",{"" if first else pair}workload="')
        self.heads, self.mids = tuple(heads), tuple(mids)
        self.header = _help(self.exposed, documentation, kind)
        # The lines of a block of series (bound values as of the last WorkloadStore.poll)
        self._lines = (
            self._trigger_lines
            if self.trigger_level
            else self._labelled_lines
            if self.values
            else self._plain_lines
        )
        # Deferred: increments are queued (O(1) on the loop) and added by the next render
        # or collect, one thread at a time (the lock): no two threads ever add to one
        # value, so none is lost.
        self.deferred = deferred
        self._pending: list[tuple[Sequence[Child], float]] = []
        self._pending_count = 0
        self._apply_lock = threading.Lock()
        self.blocks: list[bytes] = []  # per BLOCK slots: their lines, as of the last render
        self.dirty = bytearray()  # per block: 1 when a value or a series changed since
        self.pos = store.add(self)

    def labels(self, namespace: str, workload: str, *extra: str) -> Child:
        """The series of these label values, created (at zero) if missing."""
        if len(extra) != len(self.labelnames) - 2:
            raise ValueError(f"{self.name}: labels are {', '.join(self.labelnames)}")
        s = self.store.series(namespace, workload)
        if self.trigger_level:
            values: Any = self.store.trigger(s, extra[0]).vals
            at = self.pos
        elif not self.values:
            values, at = s.vals, self.pos
        else:
            at = self._at.get(extra[0])  # type: ignore[assignment]
            if at is None:
                raise ValueError(f"{self.name}: {self.label} {extra[0]!r} not in {self.values}")
            values = s.vals[self.pos]
            if values is None:
                values = s.vals[self.pos] = {} if self.sparse else [None] * len(self.values)
        if (values.get(at) if self.sparse else values[at]) is None:
            values[at] = ZERO
            self.dirty[s.slot >> SHIFT] = 1
        return Child(self, values, at, s.slot)

    def inc_each(self, children: Sequence[Child]) -> None:
        """+1 on each of ``children`` (of this family). The loop counts every steady
        workload's decision each cycle: 10,000 ``inc()`` cost 3-5 ms a cycle, queued for
        a deferred family it is one append."""
        if self.deferred:
            self.defer(children, 1.0)
            return
        for c in children:
            c.inc()

    def defer(self, children: Sequence[Child], amount: float) -> None:
        self._pending.append((children, amount))
        self._pending_count += len(children)
        if self._pending_count > MAX_PENDING:  # no render for long: add them now
            self.apply()

    def apply(self) -> None:
        """Add the queued increments (a deferred family's)."""
        if not self._pending:
            return
        with self._apply_lock:
            pending, self._pending = self._pending, []  # appends from now: the next one's
            self._pending_count = 0
            dirty = self.dirty
            for children, amount in pending:
                for c in children:
                    c._values[c._at] += amount
                    dirty[c._slot >> SHIFT] = 1

    # ---- the render --------------------------------------------------------------
    # One pass a block, spelled out per kind of family: after a cycle in which every
    # queue moved, a render formats ~30,000 lines (bench/bench_cycle.py --moving). None
    # (not known) formats as NaN.

    def _trigger_lines(self, series: Sequence[_Series | None]) -> list[str]:
        lines: list[str] = []
        append, pos, head, text = lines.append, self.pos, self.heads[0], _FORMATTED.get
        base, stride = self.store.head + (self.bound or 0), self.store.stride
        bound = self.bound is not None
        for s in series:
            if s is None:
                continue
            seen = s.seen or ()
            for t in s.seen_triggers if bound else s.triggers:
                v = t.vals[pos]
                if v is None:
                    continue
                if v is BOUND:
                    at = base + stride * t.index
                    v = seen[at] if at < len(seen) else None
                append(f'{head}{s.ens}{t.mid}{s.ewl}"}} {text(v) or _fmt(v)}\n')
        return lines

    def _labelled_lines(self, series: Sequence[_Series | None]) -> list[str]:
        lines: list[str] = []
        append, pos, heads, mids, text = (
            lines.append,
            self.pos,
            self.heads,
            self.mids,
            _FORMATTED.get,
        )
        for s in series:
            if s is None or (v := s.vals[pos]) is None:
                continue
            for k, x in list(v.items()) if self.sparse else enumerate(v):
                if x is not None:
                    append(f'{heads[k]}{s.ens}{mids[k]}{s.ewl}"}} {text(x) or _fmt(x)}\n')
        return lines

    def _plain_lines(self, series: Sequence[_Series | None]) -> list[str]:
        lines: list[str] = []
        append, pos, bound, text = lines.append, self.pos, self.bound, _FORMATTED.get
        head, mid = self.heads[0], self.mids[0]
        for s in series:
            if s is None or (v := s.vals[pos]) is None:
                continue
            if v is BOUND:
                seen = s.seen or ()
                v = seen[bound] if bound is not None and bound < len(seen) else None
            append(f'{head}{s.ens}{mid}{s.ewl}"}} {text(v) or _fmt(v)}\n')
        return lines

    def render(self, slots: list[_Series | None]) -> list[bytes]:
        """This family's text, in parts: its header, then the lines of every block of
        slots (shared with the cache, not copied: the served body holds them)."""
        dirty, blocks = self.dirty, self.blocks
        work = 0
        for b in range(len(blocks)):
            if not dirty[b]:
                continue
            dirty[b] = 0  # cleared before reading: a change from now on marks it again
            blocks[b] = "".join(self._lines(slots[b << SHIFT : (b + 1) << SHIFT])).encode()
            work += BLOCK
            if work >= SLICE:
                time.sleep(0)  # hand the GIL to the event loop
                work = 0
        return [self.header, *blocks]

    def _read(self, s: _Series) -> list[float]:
        """A series' values, in line order, bound ones read now (the slow path)."""
        out = []
        gauges = s.observed.gauges() if s.observed is not None else ()
        if self.trigger_level:
            for t in s.triggers:
                v = t.vals[self.pos]
                if v is BOUND:
                    at = self.store.head + self.store.stride * t.index + (self.bound or 0)
                    v = gauges[at] if at < len(gauges) else None
                if t.vals[self.pos] is not None:
                    out.append(NAN if v is None else float(v))
            return out
        v = s.vals[self.pos]
        if v is None:
            return out
        if self.values:
            return [float(x) for x in (v.values() if self.sparse else v) if x is not None]
        if v is BOUND:
            at = self.bound or 0
            v = gauges[at] if at < len(gauges) else None
        return [NAN if v is None else float(v)]

    def collect(self) -> Metric:
        """The family as prometheus_client's collectors give theirs (the slow path)."""
        self.apply()
        metric = Metric(self.name, self.documentation, self.kind)
        for s in self.store.slots:
            if s is None:
                continue
            v = s.vals[self.pos]
            if self.trigger_level:
                extras = [t.name for t in s.triggers if t.vals[self.pos] is not None]
            elif v is None:
                continue
            elif self.sparse:
                extras = [self.values[k] for k in v]
            elif self.values:
                extras = [x for x, value in zip(self.values, v, strict=True) if value is not None]
            else:
                extras = [""]
            base = {"namespace": s.ns, "workload": s.name}
            for extra, value in zip(extras, self._read(s), strict=True):
                labels = {**base, self.label: extra} if self.label else base
                metric.add_sample(self.exposed, labels, float(value))
        return metric

    def grow(self) -> None:
        self.blocks.append(b"")
        self.dirty.append(1)


class KeyedCounters:
    """A counter family with one label of its own (``queue``) and few changes: its text
    is kept whole, formatted again after a change."""

    def __init__(self, store: WorkloadStore, name: str, documentation: str, label: str) -> None:
        self.name, self.documentation, self.kind = name, documentation, "counter"
        self.exposed, self.label, self.labelnames = name + "_total", label, (label,)
        self.values: dict[str, float] = {}
        self.header = _help(self.exposed, documentation, "counter")
        self._text = self.header
        self.dirty = False
        store.add(self)

    def labels(self, key: str) -> KeyedChild:
        if key not in self.values:
            self.values[key] = ZERO
            self.dirty = True
        return KeyedChild(self, key)

    def render(self, _: object) -> list[bytes]:
        if self.dirty:
            self.dirty = False
            items = list(self.values.items())  # one C call: no change while copying
            lines = [f'{self.exposed}{{{self.label}="{_escape(k)}"}} {_fmt(v)}\n' for k, v in items]
            self._text = self.header + "".join(lines).encode()
        return [self._text]

    def collect(self) -> Metric:
        metric = Metric(self.name, self.documentation, "counter")
        for k, v in list(self.values.items()):
            metric.add_sample(self.exposed, {self.label: k}, v)
        return metric


class KeyedChild:
    __slots__ = ("_counters", "_key")

    def __init__(self, counters: KeyedCounters, key: str) -> None:
        self._counters, self._key = counters, key

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("Counters can only be incremented by non-negative amounts.")
        self._counters.values[self._key] += amount
        self._counters.dirty = True


class WorkloadStore(Collector):
    """Every ``Family``'s series, by workload; see the module docstring. ``head`` and
    ``stride``: the layout of ``observed.gauges()``."""

    def __init__(self, head: int = 0, stride: int = 0) -> None:
        self.head, self.stride = head, stride
        self.families: list[Family | KeyedCounters] = []
        self.slots: list[_Series | None] = []  # by slot
        self._free: list[int] = []  # slots to reuse (a heap: the lowest first)
        self._by_ref: dict[tuple[str, str], _Series] = {}
        self._workload_width = self._trigger_width = 0
        # the bound families, by their position in gauges(): per workload, per trigger
        self._bound: list[Family | None] = [None] * head
        self._bound_per_trigger: list[Family | None] = [None] * stride
        self._render_lock = threading.Lock()

    def add(self, family: Family | KeyedCounters) -> int:
        """Register a family (before any series exists); returns its index in a series."""
        assert not self.slots, "families are declared before the first series"
        self.families.append(family)
        if not isinstance(family, Family):
            return -1
        if family.bound is not None:
            (self._bound_per_trigger if family.trigger_level else self._bound)[family.bound] = (
                family
            )
        if family.trigger_level:
            self._trigger_width += 1
            return self._trigger_width - 1
        self._workload_width += 1
        return self._workload_width - 1

    def _workload_families(self) -> Iterator[Family]:
        return (f for f in self.families if isinstance(f, Family))

    def series(self, namespace: str, workload: str) -> _Series:
        """A workload's series, created (with none in any family) if missing."""
        s = self._by_ref.get((namespace, workload))
        if s is not None:
            return s
        if self._free:
            slot = heapq.heappop(self._free)  # the lowest: blocks stay dense
        else:
            slot = len(self.slots)
            self.slots.append(None)
            if slot % BLOCK == 0:
                for f in self._workload_families():
                    f.grow()
        s = self._by_ref[namespace, workload] = _Series(
            slot, namespace, workload, self._workload_width
        )
        self.slots[slot] = s
        self._touch(s)
        return s

    def trigger(self, s: _Series, name: str) -> _Trigger:
        """A workload's trigger of this name, added (with no series) if missing."""
        for t in s.triggers:
            if t.name == name:
                return t
        t = _Trigger(name, -1, self._trigger_width)
        s.triggers = (*s.triggers, t)
        self._touch(s)
        return t

    def track(
        self,
        namespace: str,
        workload: str,
        observed: Observed | None,
        triggers: Iterable[tuple[str, Sequence[Family]]],
        zero: Iterable[Family | tuple[Family, str]] = (),
        bound: Iterable[Family] = (),
    ) -> None:
        """A workload's (new) spec: its ``triggers`` in order, each with its
        trigger-level families (counters created at zero, gauges bound), its
        workload-level series created at ``zero`` (a family, or a family and a label
        value), and its ``bound`` gauges. Bound to ``observed``; without it, nothing new
        is bound and what was stays. The series of a trigger no longer in the spec go; a
        trigger that stays keeps its counts."""
        s = self.series(namespace, workload)
        if observed is not None:
            s.observed = observed
        old = {t.name: t for t in s.triggers}
        new = []
        for index, (name, families) in enumerate(triggers):
            t = _Trigger(name, index, self._trigger_width)
            if name in old:
                t.vals[:] = old[name].vals
            for f in families:
                if f.bound is None:
                    t.vals[f.pos] = t.vals[f.pos] or ZERO  # its count, or 0
                elif observed is not None:
                    t.vals[f.pos] = BOUND
            new.append(t)
        s.triggers = tuple(new)  # one assignment: a render reads the old or the new set
        for item in zero:
            family, *value = item if isinstance(item, tuple) else (item,)
            family.labels(namespace, workload, *value)
        for family in bound if observed is not None else ():
            s.vals[family.pos] = BOUND
        self._touch(s)

    def forget(self, namespace: str, workload: str) -> None:
        """Drop every series of a workload."""
        s = self._by_ref.pop((namespace, workload), None)
        if s is None:
            return
        self.slots[s.slot] = None
        heapq.heappush(self._free, s.slot)
        self._touch(s)

    def _touch(self, s: _Series) -> None:
        """After a change of which series exist: every family formats the block again."""
        for f in self._workload_families():
            f.dirty[s.slot >> SHIFT] = 1

    def poll(self) -> None:
        """Read every bound workload's gauges; mark the blocks of the bound families
        whose values differ from the last render's."""
        head, stride, per_workload, per_trigger = (
            self.head, self.stride, self._bound, self._bound_per_trigger
        )  # fmt: skip
        bound = [f for f in self._workload_families() if f.bound is not None]
        for n, s in enumerate(self.slots[:], 1):  # a copy: slots may be added meanwhile
            if n % SLICE == 0:
                time.sleep(0)  # hand the GIL to the event loop
            if s is None or s.observed is None:
                continue
            triggers, new = s.triggers, s.observed.gauges()
            while s.triggers is not triggers:  # a new spec came in between: read both again
                triggers, new = s.triggers, s.observed.gauges()
            old = s.seen
            if new == old and triggers is s.seen_triggers:
                continue
            b = s.slot >> SHIFT
            if triggers is not s.seen_triggers or old is None or len(old) != len(new):
                s.seen, s.seen_triggers = new, triggers
                for f in bound:
                    f.dirty[b] = 1
                continue
            s.seen = new
            for k, v in enumerate(new):
                if v != old[k]:
                    moved = per_workload[k] if k < head else per_trigger[(k - head) % stride]
                    if moved is not None:
                        moved.dirty[b] = 1

    def render(self) -> list[bytes]:
        """Every family's text, in parts (their concatenation: the /metrics body)."""
        with self._render_lock:
            for deferred in self._workload_families():
                deferred.apply()
            self.poll()
            out: list[bytes] = []
            for family in self.families:
                out += family.render(self.slots)
                time.sleep(0)
            return out

    def describe(self) -> Iterable[Metric]:
        return [Metric(f.name, f.documentation, f.kind) for f in self.families]

    def collect(self) -> Iterable[Metric]:
        return [f.collect() for f in self.families]
