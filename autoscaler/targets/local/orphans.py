"""Local replicas outlive no controller: they die with it, and a restart stops what is left.

Terms:

run key
    A digest of what a local controller drives: each workload's name, queue and Redis URL
    (``run_key``). Two controllers with the same key would scale the same consumers and
    cross each other's drains, so only one may hold it at a time.
run lock
    ``<tmp>/queue-autoscaler-<uid>/<run key>.lock``, held with ``flock`` by the live
    controller (``RunLock``). The kernel drops it when its holder dies, even by SIGKILL: a
    controller that gets the lock knows that every process still marked with its key is
    an orphan of a dead predecessor. A second controller for the same workloads is
    refused (exit 2) instead of killing the first one's replicas.
marker
    Every replica's environment carries ``QUEUE_AUTOSCALER_LOCAL_RUN=<run key>``
    (``OWNER_ENV``); its children inherit it unless they clear their environment.
orphan
    A process marked with our run key that we did not start (``find_orphans`` reads
    ``/proc/<pid>/environ``). ``stop_orphans`` sends each SIGTERM — a sidecar then pushes
    back what it holds, like a drained pod — and SIGKILL after the grace period.

The first defence is the parent-death signal (``proc.parent_death_signal``): the kernel
sends SIGTERM to each replica's leader when the controller dies. The orphan sweep catches
what that misses: a leader's children (the signal goes to the leader only), a leader that
ignores SIGTERM, a replica started in the instant before the controller died. Both are
Linux only (``prctl``, ``/proc``); elsewhere the sweep finds nothing and says so once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import signal
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from autoscaler.errors import InputError
from autoscaler.logs import log_event

logger = logging.getLogger(__name__)

OWNER_ENV = "QUEUE_AUTOSCALER_LOCAL_RUN"
PROC = Path("/proc")


def run_key(workloads: Iterable[tuple[str, str, str]]) -> str:
    """The run key of (name, queue, Redis URL) triples (order does not matter)."""
    text = "\n".join(sorted("\t".join(w) for w in workloads))
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()[:16]


class RunLock:
    """The run key's ``flock``; see the module docstring."""

    def __init__(self, key: str, directory: Path | None = None) -> None:
        base = directory or Path(tempfile.gettempdir()) / f"queue-autoscaler-{os.getuid()}"
        self.path = base / f"{key}.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Hold the lock, or ``InputError`` naming the controller that holds it."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle = self.path.open("a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            handle.close()
            raise InputError(
                f"another local controller (pid {holder}) already runs these workloads "
                f"(lock {self.path}): two would cross each other's drains"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            self._file.close()  # closing drops the flock
            self._file = None


def find_orphans(key: str) -> dict[int, str]:
    """Live processes marked with ``key``, by pid → their replica id (``POD_NAME``)."""
    marker = f"{OWNER_ENV}={key}".encode()
    found: dict[int, str] = {}
    me = os.getpid()
    try:
        entries = [e for e in os.listdir(PROC) if e.isdigit()]
    except OSError:
        log_event(logger, "orphan sweep unavailable", logging.WARNING, reason="no /proc")
        return found
    for entry in entries:
        pid = int(entry)
        if pid == me:
            continue
        try:
            environ = (PROC / entry / "environ").read_bytes().split(b"\0")
        except OSError:  # gone, or not ours to read
            continue
        if marker in environ and _alive(pid):
            names = [v[9:] for v in environ if v.startswith(b"POD_NAME=")]
            found[pid] = names[0].decode(errors="replace") if names else "?"
    return found


def _alive(pid: int) -> bool:
    """Running, not a zombie (an orphan's zombie waits for init, not for us)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


async def stop_orphans(key: str, grace_period_s: float, poll_s: float = 0.05) -> list[str]:
    """SIGTERM every orphan of ``key``, SIGKILL those alive after ``grace_period_s``;
    returns the replica ids they ran as (sorted, one per process)."""
    orphans = find_orphans(key)
    if not orphans:
        return []
    log_event(
        logger,
        "stopping orphan replicas",
        logging.WARNING,
        reason="a previous controller of these workloads died leaving them running",
        replicas=",".join(sorted(set(orphans.values()))),
        pids=",".join(map(str, sorted(orphans))),
    )
    _signal(orphans, signal.SIGTERM)
    deadline = time.monotonic() + grace_period_s
    # Not our children: no exit to await, only /proc to poll.
    while (left := [p for p in orphans if _alive(p)]) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(poll_s)
    if left:
        log_event(logger, "orphan replicas killed after grace period", logging.WARNING,
                  pids=",".join(map(str, left)), grace_period_s=grace_period_s)  # fmt: skip
        _signal(dict.fromkeys(left, ""), signal.SIGKILL)
    return sorted(orphans.values())


def _signal(pids: dict[int, str], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
