"""Helpers for end-to-end tests: real ``autoscaler`` processes against the fake API server."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest_asyncio

from autoscaler.annotations import ANNOTATION_PREFIX, ENABLED_LABEL
from tests.fakekube import FakeKubeServer

ROOT = Path(__file__).parent.parent


def deployment(name: str, replicas: int, **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {ENABLED_LABEL: "true"},
            "annotations": {
                ANNOTATION_PREFIX + k.replace("_", "-"): v for k, v in annotations.items()
            },
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "worker", "image": "worker"}]},
            },
        },
    }


LIVE: set[asyncio.subprocess.Process] = set()  # every process started here (see conftest)


@atexit.register
def _kill_leftovers() -> None:
    """A test interrupted mid-way (timeout, Ctrl-C) must not leave processes behind."""
    for process in LIVE:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()


class Proc:
    """An ``autoscaler`` subprocess whose stderr goes to a file (shown when a test fails)."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log

    @classmethod
    async def start(cls, log: Path, *args: str, env: dict[str, str] | None = None) -> Proc:
        handle = log.open("wb")
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "autoscaler",
            *args,
            stdout=handle,
            stderr=handle,
            cwd=ROOT,
            # faulthandler: a process that hangs is stopped with SIGABRT, which dumps its stacks
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1", **(env or {})},
        )
        handle.close()
        LIVE.add(process)
        return cls(process, log)

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out

    async def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> int:
        if self.process.returncode is None:
            self.process.send_signal(sig)
        try:
            return await asyncio.wait_for(self.process.wait(), timeout_s)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            raise AssertionError(f"process did not stop on {sig}; log:\n{self.tail()}") from None

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


async def controller(
    tmp_path: Path, kubeconfig: Path, redis_url: str, name: str = "controller", *extra: str
) -> Proc:
    return await Proc.start(
        tmp_path / f"{name}.log",
        "run",
        "--kubeconfig",
        str(kubeconfig),
        "--redis-url",
        redis_url,
        "--metrics-port",
        "0",
        "--log-format",
        "json",
        "--lease-namespace",
        "default",
        *extra,
        env={"POD_NAME": name},
    )


async def eventually(
    check: Callable[[], Awaitable[bool]] | Callable[[], bool],
    timeout_s: float,
    what: str,
    procs: tuple[Proc, ...] = (),
) -> float:
    """Poll ``check`` until true; returns the seconds it took. Fails with the procs' logs."""
    started = time.monotonic()
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            logs = "\n".join(f"--- {p.log.name}\n{p.tail()}" for p in procs)
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}\n{logs}")
        await asyncio.sleep(0.05)


class Kubelet:
    """Runs one ``autoscaler consume`` sidecar per pod of a fake Deployment, as a kubelet would.

    ``sync()`` starts a consumer (``--id`` = pod name) for each new pod, restarts one that
    died while its pod exists (a crashed container), and for each deleted pod records how
    many messages its consumer still held at that moment, then sends it SIGTERM.
    """

    def __init__(
        self,
        kube: Any,
        redis_url: str,
        queue: str,
        forward: str,
        tmp_path: Path,
        selector: str,
        *extra: str,
    ) -> None:
        self.kube, self.redis_url, self.queue, self.forward = kube, redis_url, queue, forward
        self.tmp_path, self.selector, self.extra = tmp_path, selector, extra
        self.consumers: dict[str, Proc] = {}
        self.held_at_deletion: dict[str, int] = {}
        self.deleted: list[str] = []
        self.restarts = 0
        self.stopping: list[Proc] = []
        self.hung: list[str] = []  # logs of sidecars that outlived the grace period
        self._halted = asyncio.Event()

    async def _start(self, pod: str) -> None:
        self.consumers[pod] = await Proc.start(
            self.tmp_path / f"consumer-{pod}-{self.restarts}.log",
            "consume",
            "--redis-url",
            self.redis_url,
            "--queue",
            self.queue,
            "--forward",
            self.forward,
            "--id",
            pod,
            "--heartbeat-interval",
            "0.2",
            "--log-format",
            "json",
            *self.extra,
        )

    async def sync(self, redis: Any) -> None:
        pods = {p["metadata"]["name"] for p in self.kube.list_pods("default", self.selector)}
        for pod in sorted(pods - set(self.consumers)):
            await self._start(pod)
        for pod, proc in list(self.consumers.items()):
            if pod not in pods:
                self.held_at_deletion[pod] = int(await redis.llen(f"{self.queue}:processing:{pod}"))
                self.deleted.append(pod)
                if proc.process.returncode is None:
                    proc.process.send_signal(signal.SIGTERM)
                self.stopping.append(self.consumers.pop(pod))
            elif proc.process.returncode is not None:
                self.restarts += 1
                await self._start(pod)

    async def run(self, redis: Any, interval_s: float = 0.05) -> None:
        """Sync until ``halt()``. Not stopped by cancelling: on Python 3.11 redis-py's
        ``wait_for`` can swallow a cancel (CPython gh-86296) and the loop would go on."""
        while not self._halted.is_set():
            await self.sync(redis)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval_s):
                    await self._halted.wait()

    @contextlib.asynccontextmanager
    async def running(self, redis: Any) -> AsyncIterator[None]:
        """Run the kubelet for the block; it is halted and awaited on the way out."""
        task = asyncio.create_task(self.run(redis), name="kubelet")
        try:
            yield
        finally:
            self._halted.set()
            await task

    async def stop(self, grace_s: float = 15.0) -> list[int]:
        """Stop every sidecar as a kubelet does: one SIGTERM (none again for those already
        terminating), then SIGKILL after the grace period."""
        for proc in self.consumers.values():
            if proc.process.returncode is None:
                proc.process.send_signal(signal.SIGTERM)
        procs = [*self.consumers.values(), *self.stopping]
        self.consumers.clear()
        codes = []
        for proc in procs:
            try:
                codes.append(await asyncio.wait_for(proc.process.wait(), grace_s))
            except TimeoutError:
                state = _process_state(proc.process.pid)
                proc.process.send_signal(signal.SIGABRT)  # faulthandler dumps the stacks
                try:
                    after = await asyncio.wait_for(proc.process.wait(), 5)
                except TimeoutError:
                    proc.process.kill()
                    after = await proc.process.wait()
                codes.append(-signal.SIGKILL)
                self.hung.append(
                    f"--- {proc.log.name} (pid {proc.process.pid}, {state}; "
                    f"exit {after} after SIGABRT)\n{proc.tail(80)}"
                )
        return codes


def _process_state(pid: int) -> str:
    """State and wait channel from /proc, to tell a hung process from an unreaped one."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        wchan = Path(f"/proc/{pid}/wchan").read_text()
    except OSError as e:
        return f"no /proc entry: {e}"
    return f"state {stat.rpartition(')')[2].split()[0]}, wchan {wchan or '-'}"


@pytest_asyncio.fixture
async def fake_kube(tmp_path: Path) -> AsyncIterator[FakeKubeServer]:
    """The fake API server; at teardown, every request made to it must be one the shipped
    RBAC (``deploy/base``) permits — the controller's RBAC proved, not guessed."""
    from tests.test_deploy import rbac_denied

    async with FakeKubeServer() as server:
        server.write_kubeconfig(tmp_path / "kubeconfig")
        yield server
        denied = rbac_denied(server.requests, controller_namespace="default")
        assert not denied, [(r.method, r.path, r.rbac) for r in denied]
