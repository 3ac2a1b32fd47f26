"""One local replica: a process group that is restarted when it dies, stopped on request.

Terms, as a kubelet would use them for a pod's container:

group
    The replica's command runs as the leader of a new session (``start_new_session``), so
    everything it starts (a launcher's sidecar and processor) is in one process group.
    When the leader exits, whatever is left of the group is killed: nothing outlives it.
restart
    A leader that exits while the replica is not being stopped is started again under the
    same replica id, after a back-off that doubles from ``RESTART_BASE_S`` to
    ``RESTART_CAP_S`` and starts afresh once an incarnation ran ``RESTART_RESET_S``.
stop
    SIGTERM to the leader (it forwards to its children in the order it needs), SIGKILL to
    the whole group after ``grace_period_s``, then the exit is awaited: no zombie.
parent death
    On Linux each leader is started with ``PR_SET_PDEATHSIG`` = SIGTERM
    (``parent_death_signal``): if the controller dies, even by SIGKILL, the kernel stops
    the leader as a scale-down would, and a sidecar pushes back what it holds. What that
    misses is swept at the next start (``orphans``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from autoscaler.logs import log_event

logger = logging.getLogger(__name__)

RESTART_BASE_S = 0.5
RESTART_CAP_S = 10.0
RESTART_RESET_S = 10.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@functools.cache
def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


def parent_death_signal(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` after which the kernel sends ``sig`` to the child when this
    process dies; None where there is no ``prctl`` (not Linux).

    The signal is tied to the thread that forks: start replicas from the event loop's
    thread, which lives as long as the process. A parent that died before the child's
    ``prctl`` would never send it: the child then signals itself.
    """
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:  # runs in the child, between fork and exec: keep it minimal
        prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec


class ReplicaProcess:
    """Supervises one replica's process group; ``start`` once, ``stop`` once."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        log_path: Path | None = None,
        grace_period_s: float = 30.0,
        on_restart: Callable[[str, int | None], None] = lambda name, code: None,
    ) -> None:
        self.name = name
        self.argv = tuple(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.grace_period_s = grace_period_s
        self.on_restart = on_restart
        self.created_at = time.time()  # epoch: the ReplicaInfo's age, newest removed first
        self.started_mono = time.monotonic()
        self.stopped_mono: float | None = None
        self.restarts = 0
        self.deletion_cost: int | None = None
        self.stopping = False
        self._process: asyncio.subprocess.Process | None = None
        self._wake = asyncio.Event()
        self._spawned = asyncio.Event()
        self._spawned.set()
        self._task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name=f"replica-{self.name}")

    async def _supervise(self) -> None:
        failures = 0
        while not self.stopping:
            began = time.monotonic()
            code = await self._run_once()
            if self.stopping:
                return
            failures = 1 if time.monotonic() - began >= RESTART_RESET_S else failures + 1
            self.restarts += 1
            delay = min(RESTART_CAP_S, RESTART_BASE_S * 2 ** (failures - 1))
            log_event(
                logger,
                "replica exited",
                logging.WARNING,
                replica=self.name,
                code=code,
                restart_in_s=delay,
            )
            self.on_restart(self.name, code)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    async def _run_once(self) -> int | None:
        """Start the group, wait for its leader, kill what is left; the exit code."""
        self._spawned.clear()
        try:
            with self._log_file() as out:
                self._process = await asyncio.create_subprocess_exec(
                    *self.argv,
                    env=self.env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT if out is not None else None,
                    start_new_session=True,
                    preexec_fn=parent_death_signal(),
                )
        except OSError as e:
            log_event(
                logger, "replica failed to start", logging.WARNING, replica=self.name, error=e
            )
            return None
        finally:
            self._spawned.set()  # a stop waits for this, so it never misses a new process
        try:
            return await self._process.wait()
        finally:  # also on cancellation: the group never outlives its supervisor
            self._kill_group()
            await _reap(self._process)

    @contextlib.contextmanager
    def _log_file(self) -> Iterator[int | None]:
        if self.log_path is None:
            yield None
            return
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            yield fd
        finally:
            os.close(fd)  # the child has its own copy

    def _kill_group(self) -> None:
        if self._process is not None:
            # The group id is the leader's pid, which stays reserved while any member lives.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._process.pid, signal.SIGKILL)

    def kill(self) -> bool:
        """SIGKILL the whole group now (chaos: a pod killed); it is restarted. False: none."""
        if not self.running or self.stopping:
            return False
        self._kill_group()
        return True

    async def stop(self) -> None:
        """SIGTERM the leader, SIGKILL the group after the grace period, await the exit."""
        self.stopping = True
        self._wake.set()
        await self._spawned.wait()
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(self.grace_period_s):
                    await asyncio.shield(process.wait())
            except TimeoutError:
                log_event(
                    logger,
                    "replica killed after grace period",
                    logging.WARNING,
                    replica=self.name,
                    grace_period_s=self.grace_period_s,
                )
                self._kill_group()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        self.stopped_mono = time.monotonic()

    def seconds_alive(self, now: float) -> float:
        """From the request to the end of the stop (a restarting replica is still billed)."""
        return (self.stopped_mono or now) - self.started_mono


async def _reap(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    await asyncio.shield(process.wait())
