"""A node emulator in place of a kubelet: pods of one namespace become local processes.

``NodeEmulator.run()`` registers a Node (Ready) and then, every ``interval_s``, lists the
namespace's pods and does what a kubelet would for each:

- **binds** a pending pod to its Node (there is no scheduler): ``POST pods/NAME/binding``;
- **starts** its consumer container — the one whose ``args`` begin with ``consume``, as in
  ``deploy/examples/worker.yaml`` — as ``autoscaler consume ARGS`` with the container's env
  (``value`` and ``fieldRef`` resolved, ``$(VAR)`` expanded in args, optional secret refs
  skipped); other containers (the processor) are the test's business;
- **reports** ``Running`` and ``Ready`` through ``pods/status`` (``set_ready(pod, False)``,
  or ``unready_if(pod)``, makes it not-ready on demand, as a failing probe would);
- **restarts** a container that exited while its pod is not terminating (``restartCount``
  + 1, as ``restartPolicy: Always``);
- honours **graceful deletion**: when ``deletionTimestamp`` appears it sends SIGTERM once,
  SIGKILL after ``deletionGracePeriodSeconds``, and once the process has exited deletes the
  pod for good (grace 0, uid precondition), as the kubelet's status manager does.

``history`` records every step per pod with a monotonic time, for the tests' assertions;
``on_terminating(pod)`` runs (awaited) when a pod's ``deletionTimestamp`` is first seen, before
the SIGTERM — a test records there what the pod still held when Kubernetes removed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import re
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.cluster.api import Api, ApiError, Obj
from tests.e2e import LIVE

AUTOSCALER = Path(sys.executable).parent / "autoscaler"  # the console script
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def consumer_container(pod: Obj) -> Obj | None:
    for container in pod["spec"]["containers"]:
        if (container.get("args") or [None])[0] == "consume":
            return container  # type: ignore[no-any-return]
    return None


def container_env(pod: Obj, container: Obj) -> dict[str, str]:
    fields = {
        "metadata.name": pod["metadata"]["name"],
        "metadata.namespace": pod["metadata"]["namespace"],
        "metadata.uid": pod["metadata"]["uid"],
        "spec.nodeName": pod["spec"].get("nodeName", ""),
    }
    env: dict[str, str] = {}
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = _VAR.sub(lambda m: env.get(m[1], m[0]), var["value"])
        elif "fieldRef" in (var.get("valueFrom") or {}):
            env[var["name"]] = fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
    return env


@dataclass
class Container:
    process: asyncio.subprocess.Process
    started_at: str
    log: Path


@dataclass
class PodState:
    uid: str
    ip: str
    container: Container | None = None
    restarts: int = 0
    ready_wanted: bool = True
    reported: tuple[Any, ...] | None = None  # what pods/status last said
    sigterm_at: float | None = None
    kill_at: float | None = None


@dataclass
class NodeEmulator:
    api: Api
    namespace: str
    workdir: Path
    interval_s: float = 0.1
    on_terminating: Callable[[str], Awaitable[None]] | None = None
    # Pods for which this says True are reported not-ready (a readiness probe failing):
    # e.g. a rollout's new pods, to hold the rollout half-way.
    unready_if: Callable[[Obj], bool] | None = None
    pods: dict[str, PodState] = field(default_factory=dict)
    history: list[tuple[float, str, str]] = field(default_factory=list)  # (time, pod, what)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.node = f"node-{self.namespace}"
        self._halted = asyncio.Event()
        self._next_ip = 10

    # ---- what tests use ---------------------------------------------------------------

    def set_ready(self, pod: str, ready: bool) -> None:
        self.pods[pod].ready_wanted = ready

    def crash(self, pod: str) -> None:
        """SIGKILL the pod's container, as an OOM kill would; the emulator restarts it."""
        container = self.pods[pod].container
        if container is not None and container.process.returncode is None:
            container.process.kill()

    def events(self, pod: str) -> list[str]:
        return [what for _, name, what in self.history if name == pod]

    def removed(self) -> list[str]:
        return [name for _, name, what in self.history if what == "removed"]

    def running(self) -> list[str]:
        return sorted(n for n, s in self.pods.items() if s.container and s.sigterm_at is None)

    # ---- the loop ---------------------------------------------------------------------

    async def register(self) -> None:
        node: Obj = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.node, "labels": {"kubernetes.io/hostname": self.node}},
        }
        with contextlib.suppress(ApiError):
            await self.api.create(node)
        condition = {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "lastHeartbeatTime": _now(),
            "lastTransitionTime": _now(),
        }
        status = {
            "conditions": [condition],
            "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
        }
        await self.api.patch(f"/api/v1/nodes/{self.node}/status", {"status": status})

    async def run(self) -> None:
        await self.register()
        while not self._halted.is_set():
            try:
                await self.sync()
            except Exception as e:  # keep emulating; the test sees the errors
                self.errors.append(repr(e))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self._halted.wait()

    @contextlib.asynccontextmanager
    async def running_in_background(self) -> Any:
        task = asyncio.create_task(self.run(), name=f"node {self.namespace}")
        try:
            yield self
        finally:
            self._halted.set()
            await task
            await self.shutdown()

    async def shutdown(self, grace_s: float = 10.0) -> None:
        """Stop every container: SIGTERM, SIGKILL after ``grace_s``."""
        procs = [s.container.process for s in self.pods.values() if s.container]
        for process in procs:
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in procs:
            try:
                await asyncio.wait_for(process.wait(), grace_s)
            except TimeoutError:
                process.kill()
                await process.wait()

    def _record(self, pod: str, what: str) -> None:
        self.history.append((time.monotonic(), pod, what))

    async def sync(self) -> None:
        pods = await self.api.items(f"/api/v1/namespaces/{self.namespace}/pods")
        seen = set()
        for pod in pods:
            name = pod["metadata"]["name"]
            seen.add(name)
            await self._sync_pod(pod)
        for name in [n for n in self.pods if n not in seen]:  # removed behind our back
            state = self.pods.pop(name)
            if state.container is not None and state.container.process.returncode is None:
                state.container.process.kill()
                await state.container.process.wait()
            self._record(name, "vanished")

    async def _sync_pod(self, pod: Obj) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        name = meta["name"]
        state = self.pods.get(name)
        if state is not None and state.uid != meta["uid"]:  # same name, new pod (StatefulSet)
            await self._kill(state)
            state = None
        if state is None:
            if meta.get("deletionTimestamp") and not spec.get("nodeName"):
                await self.api.delete(self._path(name), grace_s=0, uid=meta["uid"])
                return
            state = self.pods[name] = PodState(meta["uid"], f"10.244.0.{self._next_ip}")
            self._next_ip += 1
        if not spec.get("nodeName"):
            await self._bind(name)
            return
        if meta.get("deletionTimestamp"):
            await self._terminate(pod, state)
            return
        container = state.container
        if container is None:
            await self._start(pod, state)
        elif container.process.returncode is not None:
            state.restarts += 1
            self._record(name, f"exited {container.process.returncode}, restarting")
            await self._start(pod, state)
        await self._report(pod, state)

    def _path(self, name: str) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{name}"

    async def _bind(self, name: str) -> None:
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.node},
        }
        await self.api.request("POST", f"{self._path(name)}/binding", binding)
        self._record(name, "bound")

    async def _start(self, pod: Obj, state: PodState) -> None:
        name = pod["metadata"]["name"]
        spec = consumer_container(pod)
        if spec is None:
            raise AssertionError(f"pod {name} has no consumer container (args: consume ...)")
        env = container_env(pod, spec)
        args = [_VAR.sub(lambda m: env.get(m[1], m[0]), a) for a in spec["args"]]
        log = self.workdir / f"{name}-{state.restarts}.log"
        with log.open("wb") as handle:
            process = await asyncio.create_subprocess_exec(
                str(AUTOSCALER),
                *args,
                stdout=handle,
                stderr=handle,
                env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONFAULTHANDLER": "1", **env},
            )
        LIVE.add(process)
        state.container = Container(process, _now(), log)
        self._record(name, "started")

    async def _report(self, pod: Obj, state: PodState) -> None:
        container = state.container
        assert container is not None
        alive = container.process.returncode is None
        ready = alive and state.ready_wanted and not (self.unready_if and self.unready_if(pod))
        wanted = ("Running", ready, state.restarts, container.started_at)
        if wanted == state.reported:
            return
        now = _now()
        truth = "True" if ready else "False"
        spec = consumer_container(pod) or {}
        status = {
            "phase": "Running",
            "hostIP": "127.0.0.1",
            "podIP": state.ip,
            "podIPs": [{"ip": state.ip}],
            "startTime": (pod.get("status") or {}).get("startTime") or now,
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": now},
                {"type": "Initialized", "status": "True", "lastTransitionTime": now},
                {"type": "ContainersReady", "status": truth, "lastTransitionTime": now},
                {"type": "Ready", "status": truth, "lastTransitionTime": now},
            ],
            "containerStatuses": [
                {
                    "name": c["name"],
                    "image": c["image"],
                    "imageID": "",
                    "ready": ready if c is spec or c.get("name") == spec.get("name") else True,
                    "started": True,
                    "restartCount": state.restarts if c.get("name") == spec.get("name") else 0,
                    "state": {"running": {"startedAt": container.started_at}},
                }
                for c in pod["spec"]["containers"]
            ],
        }
        await self.api.patch(f"{self._path(pod['metadata']['name'])}/status", {"status": status})
        state.reported = wanted
        self._record(pod["metadata"]["name"], "ready" if ready else "not ready")

    async def _terminate(self, pod: Obj, state: PodState) -> None:
        meta = pod["metadata"]
        name = meta["name"]
        container = state.container
        now = time.monotonic()
        if state.sigterm_at is None:
            self._record(name, "terminating")
            if self.on_terminating is not None:
                await self.on_terminating(name)
            state.sigterm_at = now
            state.kill_at = now + float(meta.get("deletionGracePeriodSeconds") or 30)
            if container is not None and container.process.returncode is None:
                container.process.send_signal(signal.SIGTERM)
                self._record(name, "sigterm")
        if container is not None and container.process.returncode is None:
            if state.kill_at is not None and now >= state.kill_at:
                container.process.kill()
                self._record(name, "sigkill")
                await container.process.wait()
            else:
                return
        if container is not None:
            self._record(name, f"exited {container.process.returncode}")
        await self.api.delete(self._path(name), grace_s=0, uid=meta["uid"])
        self.pods.pop(name, None)
        self._record(name, "removed")

    async def _kill(self, state: PodState) -> None:
        if state.container is not None and state.container.process.returncode is None:
            state.container.process.kill()
            await state.container.process.wait()
