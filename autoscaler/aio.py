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
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


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
