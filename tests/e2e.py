"""Helpers for end-to-end tests: real ``autoscaler`` processes against the fake API server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from autoscaler.config import ENABLED_LABEL, PREFIX

ROOT = Path(__file__).parent.parent


def deployment(name: str, replicas: int, **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {ENABLED_LABEL: "true"},
            "annotations": {PREFIX + k.replace("_", "-"): v for k, v in annotations.items()},
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
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        handle.close()
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
