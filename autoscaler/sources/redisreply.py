"""From the Redis source's replies to readings, and the memo that skips unchanged queues.

Terms:

raw
    One queue's four values as the script returned them (backlog, in-flight, processed,
    live consumers), before validation; the pipeline's path has no raw values, its
    parsed ``QueueResult`` stands in for them.
result
    ``QueueResult``: the validated ``QueueStats``, or why the queue could not be read.
memo
    ``ReadingMemo``, one per server: each queue's last raw values and result, and each
    (lists, count-in-flight) pair's last ``Reading``. A queue whose raw values equal
    last time's keeps its result and its readings, so a quiet cycle builds no
    ``QueueStats`` and no ``Reading``: it compares the reply with the memo in a few
    C-level passes (``map``/``compress``) and looks the readings up.
batch
    The triggers of one read. The same batch as last time (the usual case: with equal
    polling intervals the jitter stays inside the batch window, so the whole fleet is
    one batch) is compared with the last reply position by position, without even a
    dictionary lookup per queue (``ReadingMemo.read_batch``); the queues that moved get
    their readings straight from the reply, and the memo stays as of the last reply it
    took — still true of that reply, which is what it is compared with next.

Why it matters: at 10,000 queues, building the per-queue tuples and readings cost ~30 ms
of a ~110 ms cycle, and every object allocated per queue also feeds the garbage
collector; a quiet cycle now allocates a few lists (``bench/bench_cycle.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain, compress, repeat
from operator import attrgetter, floordiv, is_, ne
from typing import Any, NamedTuple

from redis import exceptions as rex

from autoscaler import keys
from autoscaler.errors import TransientSourceError, truncate
from autoscaler.policy.spec import RedisTrigger
from autoscaler.policy.state import Reading

_MAX_COUNT_DIGITS = 19  # a Redis integer is a signed 64-bit value


class QueueStats(NamedTuple):
    """One queue's numbers in one cycle (a tuple: 10,000 are built per cycle)."""

    backlog: int
    in_flight: int
    processed: int
    consumers: int  # registered consumers whose lease exists


QueueResult = QueueStats | str  # str: why the queue could not be read, naming the key


class _BadValue(ValueError):
    pass


def _count(raw: object, what: str) -> int:
    """A non-negative integer from a Redis reply, or ``_BadValue`` naming ``what``."""
    if isinstance(raw, rex.RedisError):
        raise _BadValue(f"{what}: {truncate(str(raw), 120)}")
    if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0:
        return raw
    if isinstance(raw, bytes) and raw.isdigit() and len(raw) <= _MAX_COUNT_DIGITS:
        return int(raw)
    raise _BadValue(f"{what}: not a non-negative integer: {truncate(repr(raw), 60)}")


def _queue_result(
    queue: str, backlog: object, in_flight: object, processed: object, consumers: object
) -> QueueResult:
    try:
        return QueueStats(
            _count(backlog, queue),
            _count(in_flight, f"in-flight of {queue}"),
            _count(0 if processed is None else processed, keys.processed_key(queue)),
            _count(consumers, f"live consumers of {queue}"),
        )
    except _BadValue as e:
        return str(e)


def parse_lua_reply(queues: Sequence[str], reply: object) -> dict[str, QueueResult]:
    """The script's flat array → per-queue results; a wrong shape fails the whole server."""
    if not isinstance(reply, list) or len(reply) != 4 * len(queues):
        shape = f"{len(reply)} items" if isinstance(reply, list) else type(reply).__name__
        raise TransientSourceError(f"malformed script reply: {shape} for {len(queues)} queues")
    if set(map(type, reply)) <= {int} and min(reply, default=0) >= 0:  # the usual case, fast
        stats = map(QueueStats, reply[0::4], reply[1::4], reply[2::4], reply[3::4])
        return dict(zip(queues, stats, strict=True))
    return {q: _queue_result(q, *reply[4 * i : 4 * i + 4]) for i, q in enumerate(queues)}


def readings_for(
    server: str, triggers: Sequence[RedisTrigger], results: Mapping[str, QueueResult]
) -> list[Reading]:
    """One reading per trigger: its lists' numbers summed, or failed naming the bad keys."""
    readings: list[Reading] = []
    append, from_queue = readings.append, Reading.from_queue  # hot loop: 10,000 per cycle
    for trigger in triggers:
        lists = trigger.lists
        stats = results.get(lists[0]) if len(lists) == 1 else None
        if type(stats) is QueueStats:
            backlog, in_flight, processed, consumers = stats
            append(
                from_queue(
                    backlog,
                    in_flight,
                    processed,
                    count_in_flight=trigger.count_in_flight,
                    consumers=consumers,
                )
            )
        else:
            append(_summed(server, trigger, results))
    return readings


def _summed(server: str, trigger: RedisTrigger, results: Mapping[str, QueueResult]) -> Reading:
    stats = [results.get(q, f"{q}: not read") for q in dict.fromkeys(trigger.lists)]
    if errors := [s for s in stats if isinstance(s, str)]:
        return Reading.failed(f"{server}: {'; '.join(errors)}")
    ok = [s for s in stats if isinstance(s, QueueStats)]
    backlog, in_flight = sum(s.backlog for s in ok), sum(s.in_flight for s in ok)
    processed, consumers = sum(s.processed for s in ok), sum(s.consumers for s in ok)
    return Reading.from_queue(
        backlog,
        in_flight,
        processed,
        count_in_flight=trigger.count_in_flight,
        consumers=consumers,
    )


# A reading is a function of the trigger's lists and count-in-flight (and of the server,
# fixed per memo): nothing else of the trigger may enter ``readings_for``.
_ReadingKey = tuple[tuple[str, ...], bool]
_lists_of = attrgetter("lists")
_count_in_flight_of = attrgetter("count_in_flight")
_NOT_COMPARABLE = object()  # stands for raw values that must be parsed again next time
_new = tuple.__new__  # a NamedTuple from its fields in order, no argument parsing


def _check_shape(queues: Sequence[str], reply: object) -> None:
    if not isinstance(reply, list) or len(reply) != 4 * len(queues):
        shape = f"{len(reply)} items" if isinstance(reply, list) else type(reply).__name__
        raise TransientSourceError(f"malformed script reply: {shape} for {len(queues)} queues")


@dataclass
class _Batch:
    """``read_batch``'s last call: its triggers, queues, reply and readings."""

    triggers: list[RedisTrigger]
    queues: list[str]
    reply: list[Any]
    readings: list[Reading]
    plain: bool  # every value of ``reply`` is an int: positions can be compared
    _users: list[list[int]] | None = None  # per queue position, its triggers' positions
    _sole: list[int] | None = None  # per trigger, its one queue's position (-1: several)
    _at: dict[str, int] | None = None  # per queue, its position

    def index(self) -> tuple[list[list[int]], list[int]]:
        """Per queue position, the positions of its triggers; per trigger, the position
        of its only queue, or -1 (built on first use, when a queue first moves)."""
        if self._users is None or self._sole is None:
            self._at = at = {q: i for i, q in enumerate(self.queues)}
            self._users = [[] for _ in self.queues]
            self._sole = []
            for t, trigger in enumerate(self.triggers):
                lists = dict.fromkeys(trigger.lists)
                for q in lists:
                    self._users[at[q]].append(t)
                self._sole.append(at[trigger.lists[0]] if len(lists) == 1 else -1)
        return self._users, self._sole


class ReadingMemo:
    """One server's last results and readings; see the module docstring.

    Feed each cycle's reply with ``take_reply`` (the script's) or ``take_results`` (the
    pipeline's), then ask ``readings``. Every ``sweep_every`` replies, queues not read
    since the last sweep are forgotten (their workloads were deleted or moved).
    """

    def __init__(self, server: str, *, sweep_every: int = 1000) -> None:
        self.server = server
        self.results: dict[str, QueueResult] = {}
        self._raw: dict[str, object] = {}
        self._readings: dict[_ReadingKey, Reading] = {}
        # queue → keys of readings using it: a tuple, not a set (one key, almost always):
        # 2.4 → 0.6 MB at 10,000 queues (docs/performance.md, goal 5)
        self._users: dict[str, tuple[_ReadingKey, ...]] = {}
        self._seen: set[str] = set()
        self._last: _Batch | None = None  # read_batch's last call
        self._replies = 0
        self._sweep_every = sweep_every

    def read_batch(
        self, triggers: Sequence[RedisTrigger], queues: Sequence[str], reply: object
    ) -> list[Reading]:
        """Readings for ``triggers`` from the script's ``reply`` for ``queues`` (their
        lists, deduplicated, in reply order).

        When ``triggers`` and ``queues`` are last call's (the whole fleet is one batch
        when the polling intervals are equal: the jitter is within the batch window), the
        reply is compared with the last one position by position and only the triggers
        of queues that changed get new readings; otherwise ``take_reply`` + ``readings``.
        """
        _check_shape(queues, reply)
        assert isinstance(reply, list)
        last, plain = self._last, set(map(type, reply)) <= {int}
        # list ==: identical items compare by address, so an unchanged batch costs ~nothing
        if (
            last is None
            or not (plain and last.plain)
            or last.triggers != triggers
            or (last.queues != queues)
        ):
            self.take_reply(queues, reply)
            readings = self.readings(triggers)
            self._last = _Batch(list(triggers), list(queues), reply, readings, plain)
            return list(readings)
        moved = list(compress(range(len(reply)), map(ne, reply, last.reply)))
        if moved and min(map(reply.__getitem__, moved)) < 0:  # not a count: parse it all
            self._last = None
            return self.read_batch(triggers, queues, reply)
        last.reply = reply
        if moved:
            self._refresh(last, reply, moved)
        self._tick()
        return list(last.readings)

    def _refresh(self, last: _Batch, reply: list[int], moved: list[int]) -> None:
        """New readings, straight from ``reply``, for the triggers of the queues whose
        values are at ``moved`` (counts, checked). The per-queue memo is left as it was:
        still true of the older reply it was built from, against which ``take_reply``
        compares and redoes what differs. Keeping that memo up to date — a result, a raw
        tuple and a reading stored and forgotten per queue — made ``read_batch`` of
        10,000 moved queues cost 35 ms instead of 10 (docs/performance.md, goal 1)."""
        users, sole = last.index()
        triggers, readings = last.triggers, last.readings
        queues = dict.fromkeys(map(floordiv, moved, repeat(4)))  # their positions
        # the reply's columns, sliced once in C: an index each below instead of a slice
        # and its unpacking per reading (~1.5 ms of a moving cycle at 10,000; goal 1)
        backlogs, in_flights, processed, consumers = (reply[i::4] for i in range(4))
        # their triggers, each once, in C (a generator here cost ~1 ms at 10,000; goal 1)
        for t in dict.fromkeys(chain.from_iterable(map(users.__getitem__, queues))):
            q = sole[t]
            if q < 0:  # several lists, summed
                results = {name: self._stats(last, reply, name) for name in triggers[t].lists}
                readings[t] = readings_for(self.server, triggers[t : t + 1], results)[0]
                continue
            backlog, in_flight = backlogs[q], in_flights[q]
            value = backlog + in_flight if triggers[t].count_in_flight else backlog
            # Reading.from_queue's fields, built without its keyword parsing: 0.61 → 0.13
            # µs a reading, ~5 ms of a moving cycle at 10,000 (docs/performance.md, goal
            # 1); tests/test_sources_redis.py's memo test holds it to the slow path
            fields = (value, backlog, in_flight, processed[q], None, consumers[q], None)
            readings[t] = _new(Reading, fields)

    @staticmethod
    def _stats(last: _Batch, reply: list[int], queue: str) -> QueueStats:
        assert last._at is not None  # built by index()
        q = last._at[queue]
        return QueueStats._make(reply[4 * q : 4 * q + 4])

    def take_reply(self, queues: Sequence[str], reply: object) -> None:
        """The script's flat array for ``queues``; a wrong shape fails the whole server."""
        _check_shape(queues, reply)
        assert isinstance(reply, list)
        self._last = None  # read_batch's positions no longer match the memo
        self._take(queues, reply)
        self._seen.update(queues)
        self._tick()

    def _take(self, queues: Sequence[str], reply: list[Any]) -> None:
        raw = list(zip(reply[0::4], reply[1::4], reply[2::4], reply[3::4], strict=True))
        if set(map(type, reply)) <= {int}:  # the usual case: compare with the memo in C
            changed = list(compress(range(len(queues)), map(ne, raw, map(self._raw.get, queues))))
            names, fresh = [queues[i] for i in changed], [raw[i] for i in changed]
            if min(chain.from_iterable(fresh), default=0) >= 0:
                self._store(names, fresh, map(QueueStats._make, fresh))
            else:
                self._store(names, fresh, map(_queue_result, names, *zip(*fresh, strict=True)))
        else:  # an error or a raw counter somewhere: parse everything, memo only all-int raws
            keep = [r if set(map(type, r)) <= {int} else _NOT_COMPARABLE for r in raw]
            self._store(queues, keep, map(_queue_result, queues, *zip(*raw, strict=True)))

    def take_results(self, results: Mapping[str, QueueResult]) -> None:
        """The pipeline's parsed results: they are their own raw values."""
        self._last = None
        queues = list(results)
        fresh = list(results.values())
        changed = list(compress(range(len(queues)), map(ne, fresh, map(self.results.get, queues))))
        unset = [_NOT_COMPARABLE] * len(changed)
        self._store([queues[i] for i in changed], unset, [fresh[i] for i in changed])
        self._seen.update(queues)
        self._tick()

    def readings(self, triggers: Sequence[RedisTrigger]) -> list[Reading]:
        """One reading per trigger, from the results taken so far (built only if new)."""
        keys_ = list(zip(map(_lists_of, triggers), map(_count_in_flight_of, triggers), strict=True))
        out: list[Reading | None] = list(map(self._readings.get, keys_))
        missing = list(compress(range(len(out)), map(is_, out, repeat(None))))
        if missing:
            built = readings_for(self.server, [triggers[i] for i in missing], self.results)
            for i, reading in zip(missing, built, strict=True):
                key = keys_[i]
                out[i] = self._readings[key] = reading
                for queue in key[0]:
                    users = self._users.get(queue, ())
                    if key not in users:
                        self._users[queue] = (*users, key)
        return out  # type: ignore[return-value]  # every None was filled

    def _store(
        self, queues: Sequence[str], raws: Iterable[object], results: Iterable[QueueResult]
    ) -> None:
        for queue, raw, result in zip(queues, raws, results, strict=True):
            self._raw[queue], self.results[queue] = raw, result
            self._forget_readings(queue)

    def _forget_readings(self, queue: str) -> None:
        for key in self._users.pop(queue, ()):
            self._readings.pop(key, None)

    def _tick(self) -> None:
        self._replies += 1
        if self._replies % self._sweep_every:
            return
        if self._last is not None:  # read_batch reads its queues without marking them
            self._seen.update(self._last.queues)
        for queue in [q for q in self.results if q not in self._seen]:
            del self.results[queue]
            self._raw.pop(queue, None)
            self._forget_readings(queue)
        self._seen = set()
