"""The discrete-time queue simulation both policies are replayed through.

The model (the same for every policy, so that only the scaling decisions differ):

- **Time** advances in integer *ticks* of ``1/ticks_per_s`` seconds, chosen so that the
  service time is a whole number of ticks (1 s for whole-second service times, finer
  otherwise). Every change happens on a tick, so nothing is rounded mid-run; ticks where
  nothing happens are skipped (the loop goes event to event), which keeps a 1-day trace
  to a few seconds. The run is deterministic: no randomness, no clock.
- **Queue**: FIFO, kept as runs ``[arrival_tick, count]`` — counts, not per-message
  objects. A trace row's messages all arrive at the start of their second.
- **Replicas** have ``concurrency`` slots. A replica requested at ``t`` takes work from
  ``t + startup_delay``. Each free slot is a consumer blocked on the queue; like Redis
  serving blocked ``BLMOVE`` clients, the slot that has waited longest gets the next
  message, so load spreads over replicas the way it does in production.
- A message holds its slot for ``service_time`` seconds. Its **wait** is the time from its
  arrival to the start of its final processing: a message interrupted by a pod kill is
  pushed back at the head of the queue (what a redelivery with ack does — the
  conservative choice for the baseline, whose messages are not lost but wait again), its
  first wait is discarded and it is counted in ``interrupted``.
- **Replica-seconds** run from the request (a starting pod is billed) until the replica
  is removed: killed, or — when drained — when its last message is done.
- The run (:func:`autoscaler.simulate.run`) lasts until the trace is over (its idle tail
  included), the queue is empty and nothing is in flight — or until a safety cap, 24 h
  after the trace (``unfinished`` then counts what was left, e.g. a backlog below an
  activation threshold).

Within one tick: completions, replicas becoming ready, arrivals, dispatch; then the
controller, if due, observes the queue (``LLEN`` sees what dispatch could not place) and
acts, and dispatch runs again for whatever its action freed or requeued.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter, deque
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from autoscaler.errors import InputError

MAX_TICKS_PER_S = 100


class Phase(Enum):
    SERVING = "serving"  # starting or taking messages
    DRAINING = "draining"  # takes no new message, finishes what it holds
    REMOVED = "removed"


@dataclass(frozen=True)
class Params:
    """The workload: seconds per message per slot, slots per replica, pod start time."""

    service_time_s: float = 1.0
    concurrency: int = 1
    startup_delay_s: float = 10.0

    def ticks_per_s(self) -> int:
        """The coarsest tick (≤ 1 s) that makes the service time a whole number of ticks."""
        if not (self.service_time_s > 0 and math.isfinite(self.service_time_s)):
            raise InputError(f"--service-time: {self.service_time_s:g}: expected seconds > 0")
        if self.concurrency < 1:
            raise InputError(f"--concurrency: {self.concurrency}: expected a whole number ≥ 1")
        if not (self.startup_delay_s >= 0 and math.isfinite(self.startup_delay_s)):
            raise InputError(f"--startup-delay: {self.startup_delay_s:g}: expected seconds ≥ 0")
        for k in range(1, MAX_TICKS_PER_S + 1):
            if abs(self.service_time_s * k - round(self.service_time_s * k)) < 1e-6:
                return k
        raise InputError(f"--service-time: {self.service_time_s:g}: expected a multiple of 0.01 s")


@dataclass(slots=True, eq=False)
class Replica:
    rid: int  # increasing: a higher id is a newer replica
    requested: int  # tick
    ready_at: int  # tick
    phase: Phase = Phase.SERVING
    ready: bool = False
    in_flight: int = 0
    epoch: int = 0  # bumped when a drain is cancelled: older free-slot entries are stale
    removed: int | None = None


class SimulatedScaler(Protocol):
    """A scaler under simulation (``Ours``, ``KedaHpa``): acts on ticks it chooses
    (``next_tick``, strictly rising). Not ``autoscaler.controller.Controller``."""

    name: str
    next_tick: int
    initial_replicas: int

    def control(self, cluster: Cluster, tick: int) -> None: ...


class Cluster:
    """The queue, the replicas and the books; the simulated scalers call its scaling operations."""

    def __init__(self, params: Params) -> None:
        self.k = params.ticks_per_s()
        self.concurrency = params.concurrency
        self.service_ticks = round(params.service_time_s * self.k)
        self.startup_ticks = math.ceil(params.startup_delay_s * self.k - 1e-9)
        self.replicas: list[Replica] = []  # every replica ever requested, for the bill
        self.live: dict[int, Replica] = {}  # rid → replica not yet removed, oldest first
        self.backlog = 0
        self.in_flight = 0
        self.processed = 0
        self.interrupted = 0
        self.last_done = 0  # tick of the last completion
        self._queue: deque[list[int]] = deque()  # [arrival_tick, count]
        self._free: deque[list[Any]] = deque()  # [replica, epoch, slots], longest-waiting first
        self._done: dict[int, list[list[Any]]] = {}  # tick → [replica, count, arrival_tick]
        self._ready: dict[int, list[Replica]] = {}
        self._events: list[int] = []  # heap of the ticks in _done or _ready
        self.waits: Counter[int] = Counter()  # wait in ticks → messages
        self.scale_events = 0
        self.direction_changes = 0
        self.first_up_after: int | None = None  # only scale-ups from this tick on count
        self.first_scale_up: int | None = None
        self._last_direction = 0

    # --- what controllers read -------------------------------------------------------
    @property
    def replica_count(self) -> int:
        """Replicas not removed: starting, serving or draining (what is billed)."""
        return len(self.live)

    def seconds(self, tick: int) -> float:
        return tick / self.k

    def alive(self) -> list[Replica]:
        return list(self.live.values())

    def serving(self) -> list[Replica]:
        return [r for r in self.live.values() if r.phase is Phase.SERVING]

    def draining(self) -> list[Replica]:
        return [r for r in self.live.values() if r.phase is Phase.DRAINING]

    # --- what controllers do ---------------------------------------------------------
    def request(self, count: int, tick: int, *, warm: bool = False) -> None:
        """New replicas, taking work ``startup_delay`` from now (at once when ``warm``)."""
        for _ in range(count):
            ready_at = tick if warm else tick + self.startup_ticks
            replica = Replica(len(self.replicas), tick, ready_at)
            self.replicas.append(replica)
            self.live[replica.rid] = replica
            if ready_at <= tick:
                self._make_ready(replica)
            else:
                self._wake(ready_at)
                self._ready.setdefault(ready_at, []).append(replica)

    def drain(self, replica: Replica, tick: int) -> None:
        """Stop giving it messages; it is removed when the last one it holds is done."""
        replica.phase = Phase.DRAINING
        if replica.in_flight == 0:
            self._remove(replica, tick)

    def revive(self, replica: Replica) -> None:
        """Cancel a drain: the replica takes messages again with its free slots."""
        replica.phase = Phase.SERVING
        replica.epoch += 1
        if replica.ready and replica.in_flight < self.concurrency:
            self._free.append([replica, replica.epoch, self.concurrency - replica.in_flight])

    def kill(self, replica: Replica, tick: int) -> None:
        """Remove now; what it holds is interrupted and requeued at the head, oldest first."""
        lost: list[tuple[int, int]] = []
        for done, entries in self._done.items() if replica.in_flight else ():
            for entry in entries:  # pending completions only: kills are rare, this is short
                if entry[0] is replica and entry[1]:
                    lost.append((entry[2], entry[1]))
                    self.waits[done - self.service_ticks - entry[2]] -= entry[1]
                    entry[1] = 0
        for arrival, count in sorted(lost, reverse=True):
            self._queue.appendleft([arrival, count])
        count = sum(n for _, n in lost)
        self.interrupted += count
        self.backlog += count
        self.in_flight -= count
        replica.in_flight = 0
        self._remove(replica, tick)

    def record_scale(self, tick: int, before: int, after: int) -> None:
        """Book one change of the requested replica count."""
        if after == before:
            return
        self.scale_events += 1
        direction = 1 if after > before else -1
        if self._last_direction and direction != self._last_direction:
            self.direction_changes += 1
        self._last_direction = direction
        after_first = self.first_up_after is not None and tick >= self.first_up_after
        if direction > 0 and self.first_scale_up is None and after_first:
            self.first_scale_up = tick

    # --- the mechanics (the hot loop: kept flat on purpose) --------------------------
    def arrive(self, tick: int, count: int) -> None:
        self._queue.append([tick, count])
        self.backlog += count

    def next_event(self) -> int | None:
        return self._events[0] if self._events else None

    def step(self, tick: int) -> None:
        """Completions and readiness due at ``tick``."""
        if self._events and self._events[0] == tick:
            heapq.heappop(self._events)
        finished = 0
        for replica, count, _ in self._done.pop(tick, ()):
            if not count:
                continue  # interrupted by a kill
            replica.in_flight -= count
            finished += count
            if replica.phase is Phase.SERVING:
                self._free.append([replica, replica.epoch, count])
            elif replica.phase is Phase.DRAINING and not replica.in_flight:
                self._remove(replica, tick)
        if finished:
            self.in_flight -= finished
            self.processed += finished
            self.last_done = tick
        for replica in self._ready.pop(tick, ()):
            if replica.phase is not Phase.REMOVED:
                self._make_ready(replica)

    def dispatch(self, tick: int) -> None:
        """Hand queued messages to free slots, longest-waiting slot first."""
        queue, free, waits = self._queue, self._free, self.waits
        backlog = self.backlog
        if not (backlog and free):
            return
        done = tick + self.service_ticks
        self._wake(done)
        entries = self._done.setdefault(done, [])
        while backlog and free:
            slot = free[0]
            replica = slot[0]
            if replica.phase is not Phase.SERVING or replica.epoch != slot[1]:
                free.popleft()  # stale: the replica drains or is gone
                continue
            want = slot[2] if slot[2] < backlog else backlog  # min(), without the call
            replica.in_flight += want
            backlog -= want
            if want == slot[2]:
                free.popleft()
            else:
                slot[2] -= want
            while want:
                run = queue[0]
                part = want if want < run[1] else run[1]
                entries.append([replica, part, run[0]])
                waits[tick - run[0]] += part
                run[1] -= part
                want -= part
                if not run[1]:
                    queue.popleft()
        self.in_flight += self.backlog - backlog
        self.backlog = backlog

    def _wake(self, tick: int) -> None:
        """Put ``tick`` on the event heap once, however many things happen then."""
        if tick not in self._done and tick not in self._ready:
            heapq.heappush(self._events, tick)

    def _make_ready(self, replica: Replica) -> None:
        replica.ready = True
        if replica.phase is Phase.SERVING:
            self._free.append([replica, replica.epoch, self.concurrency])

    def _remove(self, replica: Replica, tick: int) -> None:
        replica.phase = Phase.REMOVED
        replica.removed = tick
        del self.live[replica.rid]
