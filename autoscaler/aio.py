"""Cancellation that is not lost: a guard for every await that goes through a client library.

On Python 3.11, ``asyncio.wait_for`` returns its inner result instead of raising when a
cancel arrives in the loop iteration in which the inner awaitable finished (CPython
gh-86296, fixed in 3.12 by rebuilding ``wait_for`` on ``asyncio.timeout``). redis-py
wraps the send of every command in ``wait_for`` whenever ``socket_timeout`` is set, and
its default is 5 s; so a task cancelled while it sends a command may just carry on. A
loop that runs until cancelled (the sidecar's heartbeat, the controller's cycle) then
never ends, and whoever awaits it hangs: a sidecar did exactly that after a drain, until
the kubelet killed it at the end of the grace period (the e2e drain test, 1 run in 3 on a
loaded 2-core machine).

The guard notices the lost cancel afterwards: ``Task.cancelling()`` counts cancel
requests, and only ``uncancel()`` (which ``asyncio.timeout`` calls when it handles its own
cancel) takes one back. If the count grew while the awaitable ran and it still returned
(or raised something else), the cancel was swallowed below us: raise it again. On 3.12+
nothing is ever swallowed there and the guard never fires.

Also here: ``Pacer``, which lets the other tasks in during a long loop.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

# Longest a long loop on the event loop (a cycle, a round of checks) runs before it lets
# the other tasks in: the goal is an event-loop lag ≤ 0.1 s (docs/performance.md, goal 4)
MAX_HOLD_S = 0.02


async def guarded(awaitable: Awaitable[T]) -> T:
    """Await ``awaitable``; re-raise a cancel of the current task that it swallowed."""
    task = asyncio.current_task()
    if task is None:
        return await awaitable
    before = task.cancelling()
    try:
        result = await awaitable
    except asyncio.CancelledError:
        raise
    except Exception as e:
        if task.cancelling() > before:
            raise asyncio.CancelledError("cancelled while a client call failed") from e
        raise
    if task.cancelling() > before:
        raise asyncio.CancelledError("cancelled while a client call completed")
    return result


def cancel_guarded(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """``guarded`` as a decorator for coroutine functions."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        return await guarded(fn(*args, **kwargs))

    return wrapper


class Pacer:
    """Lets the other tasks in during a long loop on the event loop: ``await
    pacer.after(i)`` after item ``i`` yields once ``hold_s`` have passed since the last
    yield, looking at the clock every ``every`` items (docs/performance.md, goal 4: the
    event-loop lag of a start at 10,000 workloads). The cycle's own hot loop spells this
    out instead: a call per workload costs ~1.5 ms of a moving cycle."""

    def __init__(self, hold_s: float, every: int) -> None:
        self.hold_s, self.every = hold_s, every
        self._since = time.perf_counter()

    async def after(self, i: int) -> None:
        if not i % self.every and time.perf_counter() - self._since > self.hold_s:
            await asyncio.sleep(0)
            self._since = time.perf_counter()
