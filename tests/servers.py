"""Real servers for the tests: redis-server and prometheus on free loopback ports.

Each is started from PATH (the Makefile installs the Debian packages) and stopped by the
fixture that started it. Waits are polls with a deadline, never bare sleeps.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until(
    check: Callable[[], bool], timeout_s: float, what: str, step_s: float = 0.02
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(step_s)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


def wait_started(
    stop: Callable[[], object],
    what: str,
    port: int,
    ready: Callable[[], bool] | None = None,
    timeout_s: float = 10,
    step_s: float = 0.02,
) -> None:
    """Wait until the server just spawned is ``ready`` (default: ``port`` accepts
    connections); if it does not come up in time, ``stop`` it and raise ``TimeoutError``."""
    try:
        wait_until(ready or (lambda: _port_open(port)), timeout_s, f"{what} on port {port}", step_s)
    except TimeoutError:
        stop()
        raise


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def restart(self) -> None:
        """Start again on the same port (after ``stop``), for outage tests."""
        fresh = start_redis(self.port)
        self.process = fresh.process


def start_redis(port: int | None = None) -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run `make test`, which installs it")
    port = port or free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = RedisServer(port, process)
    wait_started(server.stop, "redis-server", port)
    return server


@dataclass
class PrometheusServer:
    """A prometheus with a 1 s scrape whose targets come from a file tests can rewrite."""

    port: int
    process: subprocess.Popen[bytes]
    workdir: Path
    targets: dict[str, list[str]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_targets(self, job: str, addresses: list[str]) -> None:
        """Scrape ``addresses`` (host:port) under ``job``; file_sd picks it up within ~1 s."""
        self.targets[job] = addresses
        groups = [
            {"targets": addrs, "labels": {"job": name}} for name, addrs in self.targets.items()
        ]
        tmp = self.workdir / "targets.json.tmp"
        tmp.write_text(json.dumps(groups))
        os.replace(tmp, self.workdir / "targets.json")

    def query(self, expr: str) -> dict[str, object]:
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as response:
            body: dict[str, object] = json.load(response)
            return body

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_prometheus(rule_files: list[str] | None = None) -> PrometheusServer:
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError("prometheus is not installed: run `make test`, which installs it")
    workdir = Path(tempfile.mkdtemp(prefix="qa-prometheus-"))
    port = free_port()
    (workdir / "targets.json").write_text("[]")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": rule_files or [],
        "scrape_configs": [
            {
                "job_name": "file",
                "file_sd_configs": [
                    {"files": [str(workdir / "targets.json")], "refresh_interval": "1s"}
                ],
            }
        ],
    }
    (workdir / "prometheus.yml").write_text(json.dumps(config))
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = PrometheusServer(port, process, workdir)

    def ready() -> bool:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{server.url}/-/ready", timeout=0.5) as r,
        ):
            return bool(r.status == 200)
        return False

    wait_started(server.stop, "prometheus", port, ready, timeout_s=30, step_s=0.1)
    return server


@contextlib.contextmanager
def running_redis() -> Iterator[RedisServer]:
    server = start_redis()
    try:
        yield server
    finally:
        server.stop()


import urllib.parse  # noqa: E402  (kept beside its only user's import group)
